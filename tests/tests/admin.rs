//! The extension write API of `kubepbx up`: extensions created, changed, disabled and deleted
//! over HTTP land in the manifest folder (only the affected documents change) and are served at
//! once — sipp registers right after each answer. Bad requests are named problems and leave the
//! folder as it was.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed step must fail the test, helpers included"
)]

use kubepbx_tests::sipp::{REGISTER_DIGEST, REGISTER_WRONG_PASSWORD};
use kubepbx_tests::{Pbx, Sipp, SippOutcome, User, default_password};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Long enough for a change of the manifest folder (polled every second) on a busy machine.
const FOLDER_WAIT: Duration = Duration::from_secs(10);

/// sipp answers only the first challenge and only knows MD5, so its PBX offers MD5 alone.
fn pbx() -> Pbx {
    Pbx::builder().md5_only().start().unwrap()
}

fn register(pbx: &Pbx, user: &str, password: &str) -> SippOutcome {
    Sipp::new(REGISTER_DIGEST, pbx.sip_addr())
        .users(vec![User::new(user, password)])
        .timeout(Duration::from_secs(5))
        .run()
        .unwrap()
}

/// Succeeds when the PBX refuses the credentials with a second 401.
fn refused(pbx: &Pbx, user: &str, password: &str) -> SippOutcome {
    Sipp::new(REGISTER_WRONG_PASSWORD, pbx.sip_addr())
        .users(vec![User::new(user, password)])
        .run()
        .unwrap()
}

fn path_of(pbx: &Pbx, user: &str) -> String {
    format!("/api/v1/extensions/{}/{user}", pbx.domain())
}

/// The files of the folder with their content.
fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    files.sort();
    files
}

fn detail(answer: &Value) -> &str {
    answer["detail"].as_str().unwrap_or_default()
}

#[test]
fn an_extension_is_created_changed_disabled_and_deleted_through_the_api() {
    let pbx = pbx();
    let (status, view) = pbx
        .api_call(
            "POST",
            "/api/v1/extensions",
            Some(&json!({"extension": "1003", "password": "first-pw-1003",
                         "displayName": "Front desk"})),
        )
        .unwrap();
    assert_eq!(status, 201, "{view}\n{}", pbx.log_tail(40));
    assert_eq!(view["extension"], "1003");
    assert_eq!(view["domain"], pbx.domain());
    assert_eq!(view["displayName"], "Front desk");
    assert_eq!(view["enabled"], true);
    assert_eq!(view["registered"], false);
    assert!(!view.to_string().contains("first-pw"), "{view}");
    let file = pbx.manifest_dir().join("ext-1003.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    assert!(
        yaml.contains("kind: Extension") && yaml.contains("kind: Secret"),
        "{yaml}"
    );
    assert!(yaml.contains("stringData:"), "{yaml}");

    // Served as soon as the API answered: no wait for the folder poll.
    let first = register(&pbx, "1003", "first-pw-1003");
    assert!(first.all_succeeded(), "{}", first.diagnostics());
    let e = pbx.extension("1003").unwrap().unwrap();
    assert_eq!(e["registered"], true);
    assert_eq!(e["contacts"][0]["userAgent"], "sipp-kubepbx-tests");

    // A new password: the old one is refused with the reason, the new one works.
    let (status, view) = pbx
        .api_call(
            "PATCH",
            &path_of(&pbx, "1003"),
            Some(&json!({"password": "second-pw-1003"})),
        )
        .unwrap();
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["displayName"], "Front desk", "other fields kept");
    let old = refused(&pbx, "1003", "first-pw-1003");
    assert!(
        old.all_succeeded(),
        "old password accepted: {}",
        old.diagnostics()
    );
    let failure = &pbx.extension("1003").unwrap().unwrap()["lastFailure"];
    assert_eq!(failure["reason"], "WrongPassword", "{failure}");
    assert!(
        failure["meaning"].as_str().unwrap().contains("password"),
        "{failure}"
    );
    assert!(!failure["fix"].as_str().unwrap().is_empty(), "{failure}");
    let new = register(&pbx, "1003", "second-pw-1003");
    assert!(new.all_succeeded(), "{}", new.diagnostics());

    // Disabled: the right password no longer registers, and the API says why.
    let (status, view) = pbx
        .api_call(
            "PATCH",
            &path_of(&pbx, "1003"),
            Some(&json!({"enabled": false})),
        )
        .unwrap();
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["enabled"], false);
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("enabled: false")
    );
    let disabled = register(&pbx, "1003", "second-pw-1003");
    assert!(!disabled.all_succeeded(), "{}", disabled.diagnostics());
    let e = pbx.extension("1003").unwrap().unwrap();
    assert_eq!(e["lastFailure"]["reason"], "Disabled", "{e}");

    // Deleted: the file is gone, the registrations with it, and 1003 is unknown.
    let (status, body) = pbx.api_delete(&path_of(&pbx, "1003")).unwrap();
    assert_eq!(status, 204, "{body}");
    assert!(!file.exists());
    assert!(pbx.extension("1003").unwrap().is_none());
    let (status, _, answer) = pbx
        .api_send("GET", &path_of(&pbx, "1003"), None, Some(pbx.token()))
        .unwrap();
    assert_eq!(status, 404, "{answer}");
    let regs = pbx.api_get("/api/v1/registrations?extension=1003").unwrap();
    assert_eq!(regs, json!([]));
    let gone = refused(&pbx, "1003", "second-pw-1003");
    assert!(gone.all_succeeded(), "{}", gone.diagnostics());
    let (status, answer) = pbx
        .api_call("DELETE", &path_of(&pbx, "1003"), None)
        .unwrap();
    assert_eq!(status, 404, "{answer}");

    let log = pbx.log();
    assert!(
        !log.contains("first-pw-1003") && !log.contains("second-pw-1003"),
        "passwords are never logged"
    );
    assert!(
        log.contains("extension created through the admin API"),
        "{log}"
    );
}

const TEAM: &str = "# Sales and support, with a ConfigMap another tool owns.\n\
    apiVersion: kubepbx.io/v1alpha1\n\
    kind: Extension\n\
    metadata: {name: sales, namespace: default}\n\
    spec: {extension: \"2001\", displayName: Sales, passwordSecretRef: {name: sales}}\n\
    ---\n\
    apiVersion: v1\n\
    kind: ConfigMap    # not kubepbx's: kept byte for byte\n\
    metadata: {name: notes}\n\
    data: {motd: \"hello\"}\n\
    ---\n\
    apiVersion: v1\n\
    kind: Secret\n\
    metadata: {name: sales}\n\
    stringData: {password: \"change-me-2001\"}\n\
    ---\n\
    # Support's password is in secrets.yaml.\n\
    apiVersion: kubepbx.io/v1alpha1\n\
    kind: Extension\n\
    metadata:\n  name: support\n\
    spec:\n  extension: \"2002\"\n  passwordSecretRef:\n    name: support\n";

const SECRETS: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: support\n\
    type: Opaque\ndata:\n  password: Y2hhbmdlLW1lLTIwMDI=\n";

/// `text` cut at its `---` lines.
fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if line.starts_with("---") {
            docs.push(String::new());
        }
        docs.last_mut().unwrap().push_str(line);
    }
    docs
}

#[test]
fn a_multi_document_file_keeps_its_other_documents_byte_for_byte() {
    let pbx = pbx();
    let team = pbx.manifest_dir().join("team.yaml");
    let secrets = pbx.manifest_dir().join("secrets.yaml");
    std::fs::write(&team, TEAM).unwrap();
    std::fs::write(&secrets, SECRETS).unwrap();
    pbx.wait_for_extension("2002", FOLDER_WAIT).unwrap();
    let ok = register(&pbx, "2002", &default_password("2002"));
    assert!(ok.all_succeeded(), "{}", ok.diagnostics());

    // A new extension is a file of its own: the others do not change.
    let before = snapshot(pbx.manifest_dir());
    let (status, view) = pbx
        .api_call(
            "POST",
            "/api/v1/extensions",
            Some(
                &json!({"extension": "2003", "password": "pw-2003", "maxContacts": 2,
                         "recording": "Always"}),
            ),
        )
        .unwrap();
    assert_eq!(status, 201, "{view}");
    assert_eq!(view["maxContacts"], 2);
    assert_eq!(view["recording"], "Always");
    let after = snapshot(pbx.manifest_dir());
    for file in &before {
        assert!(after.contains(file), "{} changed", file.0.display());
    }
    assert_eq!(after.len(), before.len() + 1, "{after:?}");

    // Sales' Extension (flow style) and Secret change; the ConfigMap and Support do not.
    let (status, view) = pbx
        .api_call(
            "PATCH",
            &path_of(&pbx, "2001"),
            Some(&json!({"password": "new-2001", "displayName": "Sales team"})),
        )
        .unwrap();
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["displayName"], "Sales team");
    let old = documents(TEAM);
    let new = documents(&std::fs::read_to_string(&team).unwrap());
    assert_eq!(new.len(), old.len());
    assert_eq!(new[1], old[1], "the ConfigMap");
    assert_eq!(new[3], old[3], "Support's Extension");
    assert!(new[0].starts_with("# Sales and support"), "{}", new[0]);
    assert_eq!(std::fs::read_to_string(&secrets).unwrap(), SECRETS);
    let sales = register(&pbx, "2001", "new-2001");
    assert!(sales.all_succeeded(), "{}", sales.diagnostics());

    // Support's password lives in secrets.yaml: that file changes, team.yaml does not.
    let team_now = std::fs::read_to_string(&team).unwrap();
    let (status, view) = pbx
        .api_call(
            "PATCH",
            &path_of(&pbx, "2002"),
            Some(&json!({"password": "new-2002"})),
        )
        .unwrap();
    assert_eq!(status, 200, "{view}");
    assert_eq!(std::fs::read_to_string(&team).unwrap(), team_now);
    let secret = std::fs::read_to_string(&secrets).unwrap();
    assert!(
        secret.contains("stringData:\n  password: new-2002\n") && !secret.contains("\ndata:"),
        "{secret}"
    );
    let support = register(&pbx, "2002", "new-2002");
    assert!(support.all_succeeded(), "{}", support.diagnostics());

    // Deleting Sales removes its two documents only.
    let (status, body) = pbx.api_delete(&path_of(&pbx, "2001")).unwrap();
    assert_eq!(status, 204, "{body}");
    let left = documents(&std::fs::read_to_string(&team).unwrap());
    assert_eq!(left, [String::new(), old[1].clone(), old[3].clone()]);
    assert!(pbx.extension("2001").unwrap().is_none());
    assert_eq!(pbx.extension("2002").unwrap().unwrap()["registered"], true);

    // Deleting Support empties secrets.yaml, which goes; the ConfigMap stays.
    let (status, body) = pbx.api_delete(&path_of(&pbx, "2002")).unwrap();
    assert_eq!(status, 204, "{body}");
    assert!(!secrets.exists());
    assert_eq!(std::fs::read_to_string(&team).unwrap(), old[1]);
}

#[test]
fn bad_requests_are_named_problems_and_write_nothing() {
    let pbx = pbx();
    pbx.add_extensions(&["1001"]).unwrap();
    pbx.wait_for_extension("1001", FOLDER_WAIT).unwrap();
    let before = snapshot(pbx.manifest_dir());
    let cases = [
        (
            "POST",
            json!({"extension": "10 01", "password": "x"}),
            422,
            "extension:",
        ),
        (
            "POST",
            json!({"extension": "1004", "password": "x", "maxContacts": 0}),
            422,
            "maxContacts:",
        ),
        (
            "POST",
            json!({"extension": "1004", "password": ""}),
            422,
            "password:",
        ),
        ("POST", json!({"extension": "1004"}), 422, "password:"),
        (
            "POST",
            json!({"extension": "1004", "password": "x", "recording": "Sometimes"}),
            422,
            "recording:",
        ),
        (
            "POST",
            json!({"extension": "1001", "password": "x"}),
            409,
            "PATCH /api/v1/extensions/pbx.example.com/1001",
        ),
        ("PATCH", json!({"maxContacts": 101}), 422, "maxContacts:"),
        ("PATCH", json!({"extension": "1002"}), 422, "extension:"),
        ("PATCH", json!({"password": null}), 422, "password:"),
    ];
    for (method, body, status, needle) in cases {
        let path = match method {
            "POST" => "/api/v1/extensions".to_owned(),
            _ => path_of(&pbx, "1001"),
        };
        let (got, content_type, answer) = pbx
            .api_send(method, &path, Some(&body), Some(pbx.token()))
            .unwrap();
        assert_eq!(got, status, "{method} {body}: {answer}");
        assert_eq!(content_type.as_deref(), Some("application/problem+json"));
        assert!(detail(&answer).contains(needle), "{body}: {answer}");
    }
    let (status, answer) = pbx
        .api_call(
            "PATCH",
            &path_of(&pbx, "4711"),
            Some(&json!({"enabled": false})),
        )
        .unwrap();
    assert_eq!(status, 404, "{answer}");
    assert!(detail(&answer).contains("4711"), "{answer}");

    // The token is needed for every write.
    let writes = [
        ("POST", "/api/v1/extensions".to_owned()),
        ("PATCH", path_of(&pbx, "1001")),
        ("DELETE", path_of(&pbx, "1001")),
    ];
    for (method, path) in &writes {
        for token in [None, Some("not-the-token")] {
            let body = json!({"extension": "1005", "password": "x", "enabled": false});
            let (status, _, answer) = pbx.api_send(method, path, Some(&body), token).unwrap();
            assert_eq!(status, 401, "{method} {path} with {token:?}: {answer}");
        }
    }
    assert_eq!(snapshot(pbx.manifest_dir()), before, "nothing was written");
    assert_eq!(pbx.extension("1001").unwrap().unwrap()["enabled"], true);
}

/// Makes `dir` unwritable even for root (`chattr +i`) when it can; undone on drop.
struct ReadOnly(PathBuf, bool);

impl ReadOnly {
    fn new(dir: &Path) -> Option<ReadOnly> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let probe = dir.join("probe.txt");
        if std::fs::write(&probe, "x").is_err() {
            return Some(ReadOnly(dir.to_owned(), false));
        }
        std::fs::remove_file(&probe).unwrap();
        let immutable = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        let guard = ReadOnly(dir.to_owned(), immutable);
        (immutable && std::fs::write(&probe, "x").is_err()).then_some(guard)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt as _;
        if self.1 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .status();
        }
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

#[test]
fn an_unusable_folder_is_a_problem_naming_it_and_nothing_is_lost() {
    let pbx = pbx();
    pbx.add_extensions(&["1001"]).unwrap();
    pbx.wait_for_extension("1001", FOLDER_WAIT).unwrap();
    let dir = pbx.manifest_dir().to_owned();
    let body = json!({"extension": "1002", "password": "pw-1002"});

    match ReadOnly::new(&dir) {
        Some(read_only) => {
            let (status, answer) = pbx
                .api_call("POST", "/api/v1/extensions", Some(&body))
                .unwrap();
            assert_eq!(status, 503, "{answer}");
            let text = detail(&answer);
            assert!(
                text.contains(&*dir.join("ext-1002.yaml").to_string_lossy())
                    && text.contains("os error"),
                "{text}"
            );
            let (status, answer) = pbx
                .api_call("DELETE", &path_of(&pbx, "1001"), None)
                .unwrap();
            assert_eq!(status, 503, "{answer}");
            assert!(detail(&answer).contains("nothing was changed"), "{answer}");
            drop(read_only);
        }
        None => eprintln!("cannot make {} read-only here: skipped", dir.display()),
    }
    assert!(pbx.extension("1001").unwrap().is_some());
    assert!(pbx.extension("1002").unwrap().is_none());

    // A folder that is gone: the problem names it, and 1001 keeps being served.
    let away = dir.with_extension("away");
    std::fs::rename(&dir, &away).unwrap();
    let (status, answer) = pbx
        .api_call("POST", "/api/v1/extensions", Some(&body))
        .unwrap();
    std::fs::rename(&away, &dir).unwrap();
    assert_eq!(status, 503, "{answer}");
    let text = detail(&answer);
    assert!(
        text.contains(&*dir.to_string_lossy()) && text.contains("os error 2"),
        "{text}"
    );
    let ok = register(&pbx, "1001", &default_password("1001"));
    assert!(ok.all_succeeded(), "{}", ok.diagnostics());

    // Usable again: the same request works.
    let (status, answer) = pbx
        .api_call("POST", "/api/v1/extensions", Some(&body))
        .unwrap();
    assert_eq!(status, 201, "{answer}");
}
