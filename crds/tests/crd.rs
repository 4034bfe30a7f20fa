//! The Extension CRD: `crds/extension.yaml` is what `kubepbx crdgen` generates from the Rust
//! types, and the example manifests (what users `kubectl apply`) pass its schema while broken
//! specs do not.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed step must fail the test"
)]

use kubepbx_api::Extension;
use kubepbx_api::extension::{crd, crd_yaml};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_committed_crd_is_the_generated_one() {
    let path = root().join("crds/extension.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == crd_yaml(),
        "{} differs from the generated CRD: run `kubepbx crdgen > crds/extension.yaml`",
        path.display()
    );
}

/// The Extension schema as a JSON Schema validator.
fn validator() -> jsonschema::Validator {
    let crd = serde_json::to_value(crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    assert!(schema.is_object(), "{crd}");
    jsonschema::validator_for(schema).unwrap()
}

/// Every Extension document of the example manifests.
fn example_extensions() -> Vec<Value> {
    let mut docs = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            if value["kind"] == "Extension" {
                docs.push(value);
            }
        }
    }
    docs
}

#[test]
fn the_example_manifests_pass_the_schema_and_broken_specs_do_not() {
    let validator = validator();
    let examples = example_extensions();
    assert!(examples.len() >= 2, "examples/ holds 1001 and 1002");
    for doc in &examples {
        let errors: Vec<String> = validator.iter_errors(doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{doc}: {errors:?}");
        let typed: Extension = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(typed.spec.validate(), Ok(()));
    }
    let broken = [
        ("/spec/extension", Value::from("10 01")),
        ("/spec/maxContacts", Value::from(0)),
        ("/spec/maxContacts", Value::from(101)),
        ("/spec/recording", Value::from("Sometimes")),
        ("/spec/enabled", Value::from("yes")),
        ("/spec/passwordSecretRef/name", Value::from("")),
        ("/spec/passwordSecretRef/key", Value::from("a/b")),
        ("/spec/domain", Value::from("bad domain")),
    ];
    for (field, value) in broken {
        let mut doc = examples[0].clone();
        let (parent, key) = field.rsplit_once('/').unwrap();
        doc.pointer_mut(parent).unwrap()[key] = value.clone();
        assert!(
            !validator.is_valid(&doc),
            "{field} = {value} should fail the schema"
        );
    }
    let mut missing = examples[0].clone();
    missing["spec"]
        .as_object_mut()
        .unwrap()
        .remove("passwordSecretRef");
    assert!(
        !validator.is_valid(&missing),
        "passwordSecretRef is required"
    );
}
