use super::*;
use crate::ha1::Ha1Set;

const DOMAIN: &str = "pbx.test";

/// The examples' 1001, and a multi-document file with 1002, a ConfigMap and 1003 whose Secret
/// sits in another file.
fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ext-1001.yaml");
    std::fs::copy(examples, dir.path().join("ext-1001.yaml")).expect("copy");
    std::fs::write(dir.path().join("team.yaml"), TEAM).expect("write");
    std::fs::write(dir.path().join("secrets.yml"), SECRETS).expect("write");
    dir
}

const TEAM: &str = "# The team's extensions.\n\
    apiVersion: kubepbx.io/v1alpha1\nkind: Extension\n\
    metadata: {name: sales, namespace: default}\n\
    spec: {extension: \"1002\", displayName: Sales, passwordSecretRef: {name: sales}}\n\
    ---\n\
    apiVersion: v1\nkind: ConfigMap   # not ours\nmetadata: {name: notes}\ndata: {x: \"1\"}\n\
    ---\n\
    apiVersion: v1\nkind: Secret\nmetadata: {name: sales}\nstringData: {password: \"pw-1002\"}\n\
    ---\n\
    apiVersion: kubepbx.io/v1alpha1\nkind: Extension\nmetadata:\n  name: support\n\
    spec:\n  extension: \"1003\"\n  passwordSecretRef:\n    name: support\n";

const SECRETS: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: support\n\
    data:\n  password: cHctMTAwMw==\n";

fn key(user: &str) -> UserKey {
    UserKey::new(DOMAIN, user)
}

fn new(body: &str) -> NewExtension {
    NewExtension::from_json(body.as_bytes()).expect("valid request")
}

fn patch(body: &str) -> ExtensionChange {
    ExtensionChange::from_json(body.as_bytes()).expect("valid request")
}

fn served(dir: &tempfile::TempDir) -> BTreeMap<UserKey, ExtensionRecord> {
    let set = read_dir(dir.path()).expect("readable");
    assert_eq!(set.errors, vec![], "the folder stays valid");
    records(&set, DOMAIN)
        .records
        .into_iter()
        .map(|r| (r.key(), r))
        .collect()
}

fn text(changes: &[FileChange], name: &str) -> String {
    changes
        .iter()
        .find_map(|c| match c {
            FileChange::Write { path, text } if path.ends_with(name) => Some(text.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no write of {name} in {changes:?}"))
}

#[test]
fn a_new_extension_is_a_new_file_with_its_secret() {
    let dir = folder();
    let before = served(&dir);
    let (k, changes) = create(
        dir.path(),
        DOMAIN,
        &new(r#"{"extension": "2001", "password": "yes", "displayName": "Front: desk"}"#),
    )
    .expect("created");
    assert_eq!(k, key("2001"));
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        !format!("{changes:?}").contains("yes"),
        "no password in Debug"
    );
    commit(&changes).expect("written");
    let file = dir.path().join("ext-2001.yaml");
    let written = std::fs::read_to_string(&file).expect("written");
    assert!(written.contains("  password: \"yes\"\n"), "{written}");
    assert!(written.contains("kind: Secret\n"), "{written}");
    assert!(written.contains("  extension: \"2001\"\n"), "{written}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "it holds a password");
    }
    let after = served(&dir);
    let r = &after[&key("2001")];
    assert_eq!(r.source, "default/ext-2001");
    assert_eq!(r.display_name.as_deref(), Some("Front: desk"));
    assert_eq!(r.ha1, Ha1Set::derive("2001", DOMAIN, "yes"));
    assert!(r.enabled);
    for (k, r) in &before {
        assert_eq!(after.get(k), Some(r), "{k} unchanged");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("team.yaml")).expect("read"),
        TEAM
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_existing_number_or_name_is_not_overwritten() {
    let dir = folder();
    let e = create(
        dir.path(),
        DOMAIN,
        &new(r#"{"extension": "1002", "password": "x", "domain": "PBX.test"}"#),
    )
    .expect_err("exists");
    assert!(matches!(e, WriteError::Exists(_)), "{e}");
    assert!(e.to_string().contains("team.yaml"), "{e}");
    // Same number in another domain: a new name, since ext-1001.yaml is taken.
    let (k, changes) = create(
        dir.path(),
        DOMAIN,
        &new(r#"{"extension": "1001", "password": "x", "domain": "other.test"}"#),
    )
    .expect("another domain");
    assert_eq!(k, UserKey::new("other.test", "1001"));
    assert!(
        changes[0].path().ends_with("ext-1001-2.yaml"),
        "{changes:?}"
    );
}

#[test]
fn a_change_edits_the_documents_where_they_are() {
    let dir = folder();
    let changes = change(
        dir.path(),
        DOMAIN,
        &key("1003"),
        &patch(r#"{"enabled": false, "password": "new-1003", "displayName": "Support"}"#),
    )
    .expect("changed");
    let team = text(&changes, "team.yaml");
    let secrets = text(&changes, "secrets.yml");
    // Everything before 1003's Extension is kept byte for byte.
    let kept = &TEAM[..TEAM.rfind("---\n").expect("marker")];
    assert!(team.starts_with(kept), "{team}");
    assert!(
        team.ends_with("    name: support\n  displayName: Support\n  enabled: false\n"),
        "{team}"
    );
    assert_eq!(
        secrets,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: support\n\
         stringData:\n  password: new-1003\n"
    );
    commit(&changes).expect("written");
    let r = &served(&dir)[&key("1003")];
    assert!(!r.enabled);
    assert_eq!(r.ha1, Ha1Set::derive("1003", DOMAIN, "new-1003"));
    assert_eq!(r.display_name.as_deref(), Some("Support"));
}

#[test]
fn a_flow_style_document_is_rewritten_alone() {
    let dir = folder();
    let changes = change(
        dir.path(),
        DOMAIN,
        &key("1002"),
        &patch(r#"{"maxContacts": 2, "password": "new-1002"}"#),
    )
    .expect("changed");
    let team = text(&changes, "team.yaml");
    let configmap = &TEAM[TEAM
        .find("---\napiVersion: v1\nkind: ConfigMap")
        .expect("cm")
        ..TEAM.find("---\napiVersion: v1\nkind: Secret").expect("s")];
    assert!(team.contains(configmap), "{team}");
    assert!(team.starts_with("# The team's extensions.\n"), "{team}");
    commit(&changes).expect("written");
    let r = &served(&dir)[&key("1002")];
    assert_eq!(r.max_contacts, 2);
    assert_eq!(r.display_name.as_deref(), Some("Sales"));
    assert_eq!(r.ha1, Ha1Set::derive("1002", DOMAIN, "new-1002"));
}

#[test]
fn a_missing_secret_is_added_beside_its_extension() {
    let dir = folder();
    std::fs::remove_file(dir.path().join("secrets.yml")).expect("rm");
    assert!(served(&dir)[&key("1003")].disabled_reason.is_some());
    let changes = change(
        dir.path(),
        DOMAIN,
        &key("1003"),
        &patch(r#"{"password": "pw"}"#),
    )
    .expect("changed");
    let team = text(&changes, "team.yaml");
    assert!(team.starts_with(TEAM), "{team}");
    commit(&changes).expect("written");
    let r = &served(&dir)[&key("1003")];
    assert_eq!(r.disabled_reason, None);
    assert!(r.enabled);
}

#[test]
fn a_shared_secret_is_not_changed_for_two() {
    let dir = folder();
    let other = "apiVersion: kubepbx.io/v1alpha1\nkind: Extension\nmetadata: {name: twin}\n\
                 spec: {extension: \"1009\", passwordSecretRef: {name: sales}}\n";
    std::fs::write(dir.path().join("twin.yaml"), other).expect("write");
    let e = change(
        dir.path(),
        DOMAIN,
        &key("1002"),
        &patch(r#"{"password": "x"}"#),
    )
    .expect_err("shared");
    assert!(matches!(e, WriteError::Conflict(_)), "{e}");
    assert!(e.to_string().contains("default/twin"), "{e}");
    // Other fields can still change.
    change(
        dir.path(),
        DOMAIN,
        &key("1002"),
        &patch(r#"{"enabled": false}"#),
    )
    .expect("ok");
}

#[test]
fn invalid_and_unknown_are_told_apart() {
    let dir = folder();
    let e = change(
        dir.path(),
        DOMAIN,
        &key("1002"),
        &patch(r#"{"maxContacts": 0}"#),
    )
    .expect_err("invalid");
    assert!(
        matches!(&e, WriteError::Invalid(RequestError::Invalid { field, .. }) if field == "maxContacts"),
        "{e}"
    );
    let e = change(dir.path(), DOMAIN, &key("4711"), &patch("{}")).expect_err("unknown");
    assert!(matches!(e, WriteError::NotFound(_)), "{e}");
    let e = delete(dir.path(), DOMAIN, &UserKey::new("other.test", "1002")).expect_err("unknown");
    assert!(matches!(e, WriteError::NotFound(_)), "{e}");
    assert!(
        change(dir.path(), DOMAIN, &key("1002"), &patch("{}"))
            .expect("no-op")
            .is_empty()
    );
}

#[test]
fn delete_removes_the_documents_and_an_emptied_file() {
    let dir = folder();
    let changes = delete(dir.path(), DOMAIN, &key("1002")).expect("deleted");
    let team = text(&changes, "team.yaml");
    assert!(
        team.starts_with("---\napiVersion: v1\nkind: ConfigMap"),
        "{team}"
    );
    assert!(!team.contains("name: sales"), "{team}");
    commit(&changes).expect("written");
    let after = served(&dir);
    assert!(!after.contains_key(&key("1002")));
    assert!(after.contains_key(&key("1003")));

    let changes = delete(dir.path(), DOMAIN, &key("1001")).expect("deleted");
    assert_eq!(
        changes,
        [FileChange::Remove {
            path: dir.path().join("ext-1001.yaml")
        }]
    );
    commit(&changes).expect("removed");
    assert!(!dir.path().join("ext-1001.yaml").exists());

    // 1003's Secret is alone in its file: both files change.
    let changes = delete(dir.path(), DOMAIN, &key("1003")).expect("deleted");
    assert!(changes.contains(&FileChange::Remove {
        path: dir.path().join("secrets.yml")
    }));
    commit(&changes).expect("written");
    assert!(served(&dir).is_empty());
    let left = std::fs::read_to_string(dir.path().join("team.yaml")).expect("read");
    assert!(left.contains("kind: ConfigMap   # not ours"), "{left}");
}

#[test]
fn a_read_only_folder_names_the_file() {
    let dir = folder();
    let (_, changes) = create(
        dir.path(),
        DOMAIN,
        &new(r#"{"extension": "2002", "password": "x"}"#),
    )
    .expect("planned");
    let missing = dir.path().join("gone");
    let moved: Vec<FileChange> = changes
        .into_iter()
        .map(|c| match c {
            FileChange::Write { text, .. } => FileChange::Write {
                path: missing.join("ext-2002.yaml"),
                text,
            },
            other => other,
        })
        .collect();
    let e = commit(&moved).expect_err("no folder");
    assert!(matches!(e, WriteError::Write { .. }), "{e}");
    assert!(e.to_string().contains("gone/ext-2002.yaml"), "{e}");
}

#[test]
fn a_symlinked_file_is_written_where_it_points() {
    let dir = folder();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let target = elsewhere.path().join("secrets.yml");
    std::fs::rename(dir.path().join("secrets.yml"), &target).expect("mv");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&target, dir.path().join("secrets.yml")).expect("ln");
        let changes = change(
            dir.path(),
            DOMAIN,
            &key("1003"),
            &patch(r#"{"password": "p"}"#),
        )
        .expect("changed");
        commit(&changes).expect("written");
        let link = std::fs::symlink_metadata(dir.path().join("secrets.yml")).expect("meta");
        assert!(link.file_type().is_symlink());
        assert!(
            std::fs::read_to_string(&target)
                .expect("read")
                .contains("password: p\n")
        );
    }
}
