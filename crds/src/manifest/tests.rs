use super::*;
use crate::ha1::Ha1Set;
use std::path::PathBuf;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// A folder with the given files.
fn folder(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write");
    }
    dir
}

fn extension(name: &str, number: &str, secret: &str) -> String {
    format!(
        "apiVersion: kubepbx.io/v1alpha1\nkind: Extension\nmetadata:\n  name: {name}\n\
         spec:\n  extension: \"{number}\"\n  passwordSecretRef:\n    name: {secret}\n"
    )
}

fn secret(name: &str, password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n  password: \"{password}\"\n"
    )
}

fn read(dir: &tempfile::TempDir) -> ManifestSet {
    read_dir(dir.path()).expect("folder readable")
}

fn messages(set: &ManifestSet) -> Vec<String> {
    set.errors.iter().map(ToString::to_string).collect()
}

#[test]
fn the_examples_load_cleanly() {
    let set = read_dir(&examples()).expect("examples");
    assert_eq!(messages(&set), Vec::<String>::new());
    let names: Vec<&str> = set.extensions.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["ext-1001", "ext-1002"]);
    assert_eq!(set.extensions[0].document, 1);
    assert!(set.extensions[0].file.ends_with("ext-1001.yaml"));
    assert_eq!(set.secrets.len(), 2);

    let resolved = records(&set, "pbx.test");
    assert_eq!(resolved.problems, vec![]);
    let [r1001, r1002] = resolved.records.as_slice() else {
        panic!("two records expected: {:?}", resolved.records);
    };
    assert_eq!(r1001.key(), crate::UserKey::new("pbx.test", "1001"));
    assert_eq!(r1001.display_name.as_deref(), Some("Reception"));
    assert_eq!(
        r1001.ha1,
        Ha1Set::derive("1001", "pbx.test", "change-me-1001")
    );
    assert!(r1001.enabled);
    assert_eq!(r1001.disabled_reason, None);
    assert_eq!(r1001.max_contacts, 5);
    assert_eq!(r1001.source, "default/ext-1001");
    // 1002's password is base64 under `data:`.
    assert_eq!(
        r1002.ha1,
        Ha1Set::derive("1002", "pbx.test", "change-me-1002")
    );
    assert_eq!(r1002.display_name.as_deref(), Some("Sales"));

    // Reading again gives the same generations; another domain gives others.
    let again = records(&read_dir(&examples()).expect("examples"), "pbx.test");
    assert_eq!(again.records, resolved.records);
    let other = records(&set, "other.test");
    assert_ne!(other.records[0].generation, r1001.generation);
}

#[test]
fn several_files_and_documents_in_name_order() {
    let b = format!(
        "{}---\n{}---\n{}",
        extension("ext-2001", "2001", "s2001"),
        secret("s2001", "pw-2001"),
        extension("ext-2002", "2002", "s2001"),
    );
    let dir = folder(&[
        ("b.yaml", b.as_bytes()),
        ("a.yml", extension("ext-1001", "1001", "s2001").as_bytes()),
        ("c.YAML", extension("ext-3001", "3001", "s2001").as_bytes()),
        // Not manifests, or not to be read.
        (".hidden.yaml", extension("hidden", "9001", "x").as_bytes()),
        ("b.yaml~", extension("backup", "9002", "x").as_bytes()),
        ("#b.yaml#", extension("autosave", "9003", "x").as_bytes()),
        ("b.yaml.bak", extension("bak", "9004", "x").as_bytes()),
        ("notes.txt", b"not yaml at all: [".as_slice()),
    ]);
    std::fs::create_dir(dir.path().join("sub.yaml")).expect("mkdir");
    std::fs::write(
        dir.path().join("sub.yaml/nested.yaml"),
        extension("nested", "9005", "x"),
    )
    .expect("write");

    let set = read(&dir);
    assert_eq!(messages(&set), Vec::<String>::new());
    let found: Vec<(&str, usize)> = set
        .extensions
        .iter()
        .map(|e| (e.name.as_str(), e.document))
        .collect();
    assert_eq!(
        found,
        [
            ("ext-1001", 1),
            ("ext-2001", 1),
            ("ext-2002", 3),
            ("ext-3001", 1)
        ]
    );
    assert!(set.extensions.iter().all(|e| e.namespace == "default"));
    let resolved = records(&set, "pbx.test");
    assert_eq!(resolved.records.len(), 4);
    assert!(resolved.records.iter().all(|r| r.enabled), "{resolved:?}");
}

#[test]
fn secret_data_is_base64_and_string_data_wins() {
    let dir = folder(&[(
        "s.yaml",
        b"apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: team}\n\
          data:\n  password: b2xk\n  other: Zm9v\n  wrapped: |\n    Zm9v\n    YmFy\n\
          stringData:\n  password: new\n"
            .as_slice(),
    )]);
    let set = read(&dir);
    assert_eq!(messages(&set), Vec::<String>::new());
    let s = &set.secrets[&("team".to_owned(), "s".to_owned())];
    assert_eq!(s.data["password"].expose(), b"new");
    assert_eq!(s.data["other"].expose(), b"foo");
    assert_eq!(s.data["wrapped"].expose(), b"foobar");
}

#[test]
fn bad_base64_is_reported_without_the_value() {
    let dir = folder(&[(
        "ext.yaml",
        format!(
            "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ndata:\n  password: \"hunter2!!\"\n",
            extension("ext-1001", "1001", "s")
        )
        .as_bytes(),
    )]);
    let set = read(&dir);
    let [error] = set.errors.as_slice() else {
        panic!("one error expected: {:?}", set.errors);
    };
    assert_eq!(error.document, Some(2));
    assert_eq!(error.field.as_deref(), Some("data.password"));
    assert!(error.message.contains("not valid base64"), "{error}");
    assert!(!error.to_string().contains("hunter2"), "{error}");

    let resolved = records(&set, "pbx.test");
    assert!(!resolved.records[0].enabled);
    let reason = resolved.records[0]
        .disabled_reason
        .clone()
        .unwrap_or_default();
    assert!(reason.contains("could not be decoded"), "{reason}");
}

#[test]
fn a_wrongly_typed_field_names_file_document_and_field() {
    let doc2 = extension("ext-1001", "1001", "s").replace(
        "  passwordSecretRef:",
        "  maxContacts: five\n  passwordSecretRef:",
    );
    let text = format!("{}---\n{doc2}", secret("s", "pw"));
    let dir = folder(&[("ext-1001.yaml", text.as_bytes())]);
    let set = read(&dir);
    assert_eq!(
        messages(&set),
        [format!(
            "{}: document 2: spec.maxContacts: invalid type: string \"five\", expected u32",
            dir.path().join("ext-1001.yaml").display()
        )]
    );
    assert!(set.extensions.is_empty());
}

#[test]
fn a_numeric_extension_suggests_quoting() {
    let text = extension("ext-1001", "1001", "s").replace("\"1001\"", "1001");
    let dir = folder(&[("e.yaml", text.as_bytes())]);
    let set = read(&dir);
    let [error] = set.errors.as_slice() else {
        panic!("one error expected: {:?}", set.errors);
    };
    assert_eq!(error.field.as_deref(), Some("spec.extension"));
    assert!(error.message.ends_with("; quote the value"), "{error}");
}

#[test]
fn unknown_spec_fields_and_missing_ones_are_reported() {
    let typo = extension("a", "1001", "s").replace("  extension:", "  extention: x\n  extension:");
    let missing = "apiVersion: kubepbx.io/v1alpha1\nkind: Extension\nmetadata: {name: b}\nspec:\n  extension: \"1\"\n";
    let dir = folder(&[("a.yaml", typo.as_bytes()), ("b.yaml", missing.as_bytes())]);
    let set = read(&dir);
    let errors = messages(&set);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("document 1: spec.extention: unknown field `extention`"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("spec: missing field `passwordSecretRef`"),
        "{errors:?}"
    );
}

#[test]
fn validation_errors_name_the_field() {
    let bad = extension("ext-bad", "10 01", "s");
    let dir = folder(&[("bad.yaml", bad.as_bytes())]);
    let set = read(&dir);
    let [error] = set.errors.as_slice() else {
        panic!("one error expected: {:?}", set.errors);
    };
    assert_eq!(error.document, Some(1));
    assert_eq!(error.field.as_deref(), Some("spec.extension"));
    assert!(
        error
            .to_string()
            .contains("bad.yaml: document 1: spec.extension: \"10 01\" is not a valid extension"),
        "{error}"
    );
}

#[test]
fn bad_metadata_is_reported() {
    let upper = extension("Ext_1001", "1001", "s");
    let ns = extension("ext-1001", "1001", "s").replace(
        "  name: ext-1001\n",
        "  name: ext-1001\n  namespace: Team.A\n",
    );
    let dir = folder(&[("a.yaml", upper.as_bytes()), ("b.yaml", ns.as_bytes())]);
    let set = read(&dir);
    let fields: Vec<Option<&str>> = set.errors.iter().map(|e| e.field.as_deref()).collect();
    assert_eq!(fields, [Some("metadata.name"), Some("metadata.namespace")]);
}

#[test]
fn a_missing_secret_disables_only_that_extension() {
    let text = format!(
        "{}---\n{}---\n{}",
        extension("ext-1001", "1001", "nope"),
        extension("ext-1002", "1002", "s"),
        secret("s", "pw")
    );
    let dir = folder(&[("e.yaml", text.as_bytes())]);
    let resolved = records(&read(&dir), "pbx.test");
    let [r1001, r1002] = resolved.records.as_slice() else {
        panic!("two records expected");
    };
    assert!(!r1001.enabled);
    assert_eq!(r1001.ha1.md5, "");
    assert_eq!(r1001.ha1.sha256, "");
    let reason = r1001.disabled_reason.clone().unwrap_or_default();
    assert!(reason.contains("Secret default/nope not found"), "{reason}");
    assert!(r1002.enabled);
    assert_eq!(resolved.problems.len(), 1);
    let problem = resolved.problems[0].to_string();
    assert!(
        problem.contains(
            "e.yaml: document 1: Extension default/ext-1001: password Secret default/nope not found"
        ),
        "{problem}"
    );
    assert!(
        problem.contains("kubectl create secret generic nope -n default"),
        "{problem}"
    );
}

#[test]
fn a_secret_in_another_namespace_does_not_count() {
    let text = format!(
        "{}---\n{}",
        extension("ext-1001", "1001", "s"),
        secret("s", "pw").replace("  name: s\n", "  name: s\n  namespace: other\n")
    );
    let dir = folder(&[("e.yaml", text.as_bytes())]);
    let resolved = records(&read(&dir), "pbx.test");
    assert!(!resolved.records[0].enabled);
    assert!(matches!(
        &resolved.problems[0].kind,
        ProblemKind::Secret(SecretProblem::SecretNotFound { .. })
    ));
}

#[test]
fn a_missing_key_disables_the_extension() {
    let ext =
        extension("ext-1001", "1001", "s").replace("    name: s\n", "    name: s\n    key: sip\n");
    let text = format!("{ext}---\n{}", secret("s", "pw"));
    let dir = folder(&[("e.yaml", text.as_bytes())]);
    let resolved = records(&read(&dir), "pbx.test");
    assert!(!resolved.records[0].enabled);
    assert_eq!(
        resolved.problems[0].kind,
        ProblemKind::Secret(SecretProblem::SecretKeyMissing {
            namespace: "default".into(),
            name: "s".into(),
            key: "sip".into()
        })
    );
    let reason = resolved.records[0]
        .disabled_reason
        .clone()
        .unwrap_or_default();
    assert!(reason.contains("has no key \"sip\""), "{reason}");
}

#[test]
fn empty_and_non_text_passwords_are_problems() {
    let dir = folder(&[(
        "e.yaml",
        format!(
            "{}---\n{}---\n{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: bin}}\ndata: {{password: /w==}}\n",
            extension("ext-1001", "1001", "empty"),
            extension("ext-1002", "1002", "bin"),
            secret("empty", ""),
        )
        .as_bytes(),
    )]);
    let resolved = records(&read(&dir), "pbx.test");
    assert!(resolved.records.iter().all(|r| !r.enabled));
    assert!(matches!(
        resolved.problems[0].kind,
        ProblemKind::Secret(SecretProblem::PasswordEmpty { .. })
    ));
    assert!(matches!(
        resolved.problems[1].kind,
        ProblemKind::Secret(SecretProblem::SecretKeyInvalid { .. })
    ));
}

#[test]
fn a_duplicate_number_keeps_the_first_definition() {
    let dir = folder(&[
        (
            "a.yaml",
            format!(
                "{}---\n{}",
                extension("first", "1001", "s"),
                secret("s", "pw")
            )
            .as_bytes(),
        ),
        ("b.yaml", extension("second", "1001", "s").as_bytes()),
        // Same number in another domain: no conflict.
        (
            "c.yaml",
            extension("third", "1001", "s")
                .replace("spec:\n", "spec:\n  domain: other.test\n")
                .as_bytes(),
        ),
        // Same number, same domain spelled in capitals: conflict.
        (
            "d.yaml",
            extension("fourth", "1001", "s")
                .replace("spec:\n", "spec:\n  domain: PBX.test\n")
                .as_bytes(),
        ),
        // Same resource name as the first one.
        ("e.yaml", extension("first", "1005", "s").as_bytes()),
    ]);
    let resolved = records(&read(&dir), "pbx.test");
    let sources: Vec<&str> = resolved.records.iter().map(|r| r.source.as_str()).collect();
    assert_eq!(sources, ["default/first", "default/third"]);
    let problems: Vec<String> = resolved.problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].contains("b.yaml: document 1: Extension default/second: extension 1001@pbx.test is already defined by Extension default/first"), "{problems:?}");
    assert!(problems[0].contains("a.yaml: document 1"), "{problems:?}");
    assert!(problems[1].contains("default/fourth"), "{problems:?}");
    assert!(
        problems[2].contains("e.yaml: document 1: Extension default/first: defined again"),
        "{problems:?}"
    );
}

#[test]
fn a_duplicate_secret_keeps_the_first() {
    let text = format!(
        "{}---\n{}---\n{}",
        extension("ext-1001", "1001", "s"),
        secret("s", "first"),
        secret("s", "second")
    );
    let dir = folder(&[("e.yaml", text.as_bytes())]);
    let set = read(&dir);
    assert_eq!(set.errors.len(), 1);
    assert!(
        set.errors[0]
            .to_string()
            .contains("document 3: metadata.name: Secret default/s is already defined")
    );
    let resolved = records(&set, "pbx.test");
    assert_eq!(
        resolved.records[0].ha1,
        Ha1Set::derive("1001", "pbx.test", "first")
    );
}

#[test]
fn other_kinds_are_ignored() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n---\n\
                apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: 1}\n---\n\
                apiVersion: example.com/v1\nkind: Extension\nmetadata: {name: e}\nspec: {foo: bar}\n---\n\
                - just\n- a list\n---\nplain scalar\n---\nkey: value\n";
    let dir = folder(&[("other.yaml", text.as_bytes())]);
    let set = read(&dir);
    assert_eq!(messages(&set), Vec::<String>::new());
    assert!(set.extensions.is_empty() && set.secrets.is_empty());
}

#[test]
fn another_kubepbx_version_is_an_error() {
    let text = extension("e", "1001", "s").replace("v1alpha1", "v1beta1");
    let dir = folder(&[("e.yaml", text.as_bytes())]);
    let set = read(&dir);
    assert_eq!(set.errors.len(), 1);
    assert_eq!(set.errors[0].field.as_deref(), Some("apiVersion"));
}

#[test]
fn empty_documents_and_comment_only_files_are_fine() {
    let dir = folder(&[
        (
            "comments.yaml",
            b"# nothing here yet\n# really\n".as_slice(),
        ),
        ("empty.yaml", b"".as_slice()),
        (
            "gaps.yaml",
            format!(
                "---\n---\n# c\n---\n{}---\n",
                extension("ext-1001", "1001", "s")
            )
            .as_bytes(),
        ),
    ]);
    let set = read(&dir);
    assert_eq!(messages(&set), Vec::<String>::new());
    assert_eq!(set.extensions.len(), 1);
}

#[test]
fn a_non_utf8_file_is_an_error_naming_it() {
    let dir = folder(&[
        ("bad.yaml", b"apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {password: \"\xff\xfe\"}\n".as_slice()),
        ("good.yaml", extension("ext-1001", "1001", "s").as_bytes()),
    ]);
    let set = read(&dir);
    let [error] = set.errors.as_slice() else {
        panic!("one error expected: {:?}", set.errors);
    };
    assert_eq!(error.file, dir.path().join("bad.yaml"));
    assert_eq!(error.document, None);
    assert!(error.message.contains("not UTF-8"), "{error}");
    assert_eq!(set.extensions.len(), 1, "other files still load");
}

#[test]
fn a_yaml_syntax_error_stops_only_that_file() {
    let text = format!(
        "{}---\nkind: [unclosed\n---\n{}",
        extension("a", "1001", "s"),
        extension("b", "1002", "s")
    );
    let dir = folder(&[
        ("a.yaml", text.as_bytes()),
        ("b.yaml", extension("c", "1003", "s").as_bytes()),
    ]);
    let set = read(&dir);
    assert_eq!(set.errors.len(), 1, "{:?}", messages(&set));
    assert_eq!(set.errors[0].document, Some(2));
    let names: Vec<&str> = set.extensions.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "c"]);
}

#[test]
fn secret_values_never_show_in_debug_or_errors() {
    let text = format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: t}}\nstringData:\n  password: 987654321\n",
        secret("s", "sup3r-s3cret")
    );
    let dir = folder(&[("s.yaml", text.as_bytes())]);
    let set = read(&dir);
    let debug = format!("{set:?}");
    assert!(!debug.contains("sup3r-s3cret"), "{debug}");
    let errors = messages(&set);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("stringData.password: must be a string"),
        "{errors:?}"
    );
    assert!(!errors[0].contains("987654321"), "{errors:?}");
}

#[test]
fn the_generation_follows_the_password_and_spec() {
    let spec: ExtensionSpec =
        serde_norway::from_str("extension: \"1001\"\npasswordSecretRef: {name: s}\n")
            .expect("spec");
    let gen_of = |spec: &ExtensionSpec, password: &str| {
        fingerprint(&extension_record(
            "default",
            "e",
            spec,
            "pbx.test",
            Ok(password),
            0,
        ))
    };
    let base = gen_of(&spec, "one");
    assert_eq!(base, gen_of(&spec, "one"));
    assert_ne!(base, gen_of(&spec, "two"));
    let mut renamed = spec.clone();
    renamed.display_name = Some("Reception".into());
    assert_ne!(base, gen_of(&renamed, "one"));
    let missing = SecretProblem::SecretNotFound {
        namespace: "default".into(),
        name: "s".into(),
        key: "password".into(),
    };
    let disabled = extension_record("default", "e", &spec, "pbx.test", Err(missing), 0);
    assert_ne!(base, fingerprint(&disabled));
    // A record built with a given generation keeps it.
    assert_eq!(
        extension_record("default", "e", &spec, "pbx.test", Ok("one"), 42).generation,
        42
    );
}

#[test]
fn a_missing_folder_is_an_error() {
    let err = read_dir(Path::new("/nonexistent/kubepbx-manifests")).expect_err("missing");
    assert!(
        err.to_string().contains("/nonexistent/kubepbx-manifests"),
        "{err}"
    );
}
