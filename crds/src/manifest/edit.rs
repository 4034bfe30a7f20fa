//! Editing one manifest file as text: change fields of a document, remove a document or add
//! one, keeping every other byte of the file as it was.
//!
//! A file is cut into documents at the lines starting with `---` (YAML's document marker, which
//! cannot start a line inside a document). Each document is parsed on its own, and the one to
//! edit is found by kind, namespace and name ([`DocumentId`]), not by position.
//!
//! A field change ([`FieldEdit`]: `spec.enabled`, `stringData.password`) is first made on the
//! document's lines — the line `  enabled: true` under `spec:` is replaced, removed or added —
//! which keeps comments and layout. When the document is not laid out that simply (flow style,
//! multi-line values), it is written anew from its parsed value instead, losing its own
//! comments. Either way the edited document is parsed again and must equal the intended value;
//! otherwise nothing changes and [`EditError`] says why.
//!
//! Written strings are plain when they cannot be read as anything else (`kind: Extension`),
//! otherwise YAML double-quoted scalars in JSON string syntax (`extension: "1001"`), so YAML 1.2
//! parsers and `kubectl` (YAML 1.1, where an unquoted `yes` is a boolean) read the same string.

use super::EXTENSION_API_VERSION;
use serde_norway::{Mapping, Value};

/// Which document: kind, namespace (`default` when absent) and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentId {
    /// Extension or Secret.
    pub kind: DocumentKind,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

/// The kinds of documents the admin API edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    /// `kubepbx.io/v1alpha1 Extension`.
    Extension,
    /// `v1 Secret`.
    Secret,
}

impl DocumentId {
    /// An Extension's id.
    pub fn extension(namespace: &str, name: &str) -> Self {
        DocumentId {
            kind: DocumentKind::Extension,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// A Secret's id.
    pub fn secret(namespace: &str, name: &str) -> Self {
        DocumentId {
            kind: DocumentKind::Secret,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn matches(&self, value: &Value) -> bool {
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        let (api, kind) = match self.kind {
            DocumentKind::Extension => (EXTENSION_API_VERSION, "Extension"),
            DocumentKind::Secret => ("v1", "Secret"),
        };
        let meta = value.get("metadata");
        let namespace = meta
            .and_then(|m| text(m, "namespace"))
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        text(value, "apiVersion").as_deref() == Some(api)
            && text(value, "kind").as_deref() == Some(kind)
            && meta.and_then(|m| text(m, "name")).as_deref() == Some(self.name.as_str())
            && namespace == self.namespace
    }
}

/// One field of a document to set (`Some`) or remove (`None`): `parent.key`, where `parent` is
/// a top-level mapping such as `spec` or `stringData`. A parent left empty is removed too.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldEdit {
    /// The top-level key, e.g. `spec`.
    pub parent: String,
    /// The key inside it, e.g. `enabled`.
    pub key: String,
    /// The new scalar value, or `None` to remove the key.
    pub value: Option<Value>,
}

impl FieldEdit {
    /// Sets `parent.key` to `value`.
    pub fn set(parent: &str, key: &str, value: impl Into<Value>) -> Self {
        FieldEdit {
            parent: parent.to_owned(),
            key: key.to_owned(),
            value: Some(value.into()),
        }
    }

    /// Removes `parent.key`.
    pub fn remove(parent: &str, key: &str) -> Self {
        FieldEdit {
            parent: parent.to_owned(),
            key: key.to_owned(),
            value: None,
        }
    }
}

/// Why an edit was refused; the file is then left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EditError(String);

impl EditError {
    pub(crate) fn new(why: impl Into<String>) -> Self {
        EditError(why.into())
    }
}

/// A manifest file cut into documents (see the module docs).
#[derive(Debug, Clone)]
pub struct ManifestText {
    /// The documents' texts; their concatenation is the file.
    docs: Vec<String>,
    /// `\r\n` when the file uses it, else `\n`.
    newline: &'static str,
}

impl ManifestText {
    /// Cuts `text` into documents. Never fails: a document that does not parse is kept as it
    /// is and never matches a [`DocumentId`].
    pub fn parse(text: &str) -> Self {
        let mut docs: Vec<String> = Vec::new();
        let mut current = String::new();
        for line in text.split_inclusive('\n') {
            if is_marker(line) && !current.is_empty() {
                docs.push(std::mem::take(&mut current));
            }
            current.push_str(line);
        }
        if !current.is_empty() {
            docs.push(current);
        }
        ManifestText {
            docs,
            newline: if text.contains("\r\n") { "\r\n" } else { "\n" },
        }
    }

    /// The file's text.
    pub fn text(&self) -> String {
        self.docs.concat()
    }

    /// Whether the file holds nothing but comments, blank lines and document markers.
    pub fn is_blank(&self) -> bool {
        self.docs
            .iter()
            .flat_map(|d| d.lines())
            .all(|line| !is_content(line) || is_bare_marker(line) || is_end_marker(line))
    }

    /// The first document that is `id`.
    pub fn find(&self, id: &DocumentId) -> Option<usize> {
        self.docs
            .iter()
            .position(|doc| parse_document(doc).is_some_and(|v| id.matches(&v)))
    }

    /// The parsed value of document `index`.
    pub fn value(&self, index: usize) -> Option<Value> {
        self.docs.get(index).and_then(|d| parse_document(d))
    }

    /// Removes document `index` (with the comments inside it).
    pub fn remove(&mut self, index: usize) {
        if index < self.docs.len() {
            self.docs.remove(index);
        }
    }

    /// Adds a document at the end of the file.
    pub fn push(&mut self, value: &Value) -> Result<(), EditError> {
        let body = self.lines(&render(value)?);
        if let Some(last) = self.docs.last_mut()
            && !last.ends_with('\n')
        {
            last.push_str(self.newline);
        }
        let doc = if self.docs.is_empty() {
            body
        } else {
            format!("---{}{body}", self.newline)
        };
        self.docs.push(doc);
        Ok(())
    }

    /// Applies `edits` to document `index` (see the module docs).
    pub fn set_fields(&mut self, index: usize, edits: &[FieldEdit]) -> Result<(), EditError> {
        let doc = self
            .docs
            .get(index)
            .ok_or_else(|| EditError(format!("there is no document {}", index + 1)))?;
        let mut expected = parse_document(doc)
            .ok_or_else(|| EditError("the document does not parse as YAML".to_owned()))?;
        for edit in edits {
            apply_to_value(&mut expected, edit)?;
        }
        let by_lines = edits
            .iter()
            .try_fold(doc.clone(), |text, edit| self.edit_lines(&text, edit));
        if let Some(text) = by_lines
            && parse_document(&text).as_ref() == Some(&expected)
        {
            self.docs[index] = text;
            return Ok(());
        }
        let text = self.rewrite(doc, &expected)?;
        if parse_document(&text).as_ref() != Some(&expected) {
            return Err(EditError(
                "the document cannot be rewritten safely (it uses YAML features such as \
                 anchors, tags or multi-line values in a way this editor does not follow); \
                 edit it by hand"
                    .to_owned(),
            ));
        }
        self.docs[index] = text;
        Ok(())
    }

    /// `text` with the file's line endings.
    fn lines(&self, text: &str) -> String {
        if self.newline == "\n" {
            text.to_owned()
        } else {
            text.replace('\n', self.newline)
        }
    }

    /// The document rewritten from `value`, keeping its marker line and the comments before
    /// and after its content.
    fn rewrite(&self, doc: &str, value: &Value) -> Result<String, EditError> {
        let lines: Vec<&str> = doc.split_inclusive('\n').collect();
        let mut start = 0;
        let mut out = String::new();
        if let Some(first) = lines.first().filter(|l| is_marker(l)) {
            if is_bare_marker(first) {
                out.push_str(first);
            } else {
                out.push_str("---");
                out.push_str(self.newline);
            }
            start = 1;
        }
        let content: Vec<usize> = (start..lines.len())
            .filter(|&i| is_content(lines[i]))
            .collect();
        let (first, last) = match (content.first(), content.last()) {
            (Some(&f), Some(&l)) => (f, l),
            _ => (lines.len(), lines.len()),
        };
        lines[start..first].iter().for_each(|l| out.push_str(l));
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str(self.newline);
        }
        out.push_str(&self.lines(&render(value)?));
        lines[(last + 1).min(lines.len())..]
            .iter()
            .for_each(|l| out.push_str(l));
        Ok(out)
    }

    /// One field changed on the lines of `doc`; `None` when the layout is not simple enough.
    fn edit_lines(&self, doc: &str, edit: &FieldEdit) -> Option<String> {
        let mut lines: Vec<String> = doc.split_inclusive('\n').map(str::to_owned).collect();
        let nl = self.newline;
        let parent = lines.iter().position(|l| is_key_line(l, 0, &edit.parent));
        let Some(parent) = parent else {
            let value = edit.value.as_ref()?;
            // No such mapping: add it after the document's last content line.
            let at = lines
                .iter()
                .rposition(|l| is_content(l))
                .map_or(0, |i| i + 1);
            if at > 0 && !lines[at - 1].ends_with('\n') {
                lines[at - 1].push_str(nl);
            }
            let block = format!(
                "{}:{nl}  {}: {}{nl}",
                edit.parent,
                string(&edit.key),
                scalar(value).ok()?
            );
            lines.insert(at, block);
            return Some(lines.concat());
        };
        if !rest_after_key(&lines[parent], &edit.parent).is_empty() {
            return None; // `spec: {…}` or an anchor: not a simple block
        }
        // The block: the lines after `parent:` up to the next top-level content line.
        let end = (parent + 1..lines.len())
            .find(|&i| is_content(&lines[i]) && indent(&lines[i]) == 0)
            .unwrap_or(lines.len());
        let children: Vec<usize> = (parent + 1..end)
            .filter(|&i| is_content(&lines[i]))
            .collect();
        let child_indent = children.first().map_or(2, |&i| indent(&lines[i]));
        if lines[parent + 1..end].iter().any(|l| l.starts_with('\t')) {
            return None;
        }
        let found = children
            .iter()
            .position(|&i| is_key_line(&lines[i], child_indent, &edit.key));
        match (found, &edit.value) {
            (Some(pos), value) => {
                let i = children[pos];
                let rest = rest_after_key(&lines[i], &edit.key);
                let next_is_deeper = children
                    .get(pos + 1)
                    .is_some_and(|&n| indent(&lines[n]) > child_indent);
                let multi_line = rest.is_empty()
                    || next_is_deeper
                    || rest.starts_with(['|', '>', '&', '*', '!', '[', '{']);
                if multi_line {
                    return None;
                }
                match value {
                    Some(value) => {
                        let ending = if lines[i].ends_with('\n') { nl } else { "" };
                        lines[i] = format!(
                            "{}{}: {}{ending}",
                            " ".repeat(child_indent),
                            string(&edit.key),
                            scalar(value).ok()?
                        );
                    }
                    None => {
                        lines.remove(i);
                        if children.len() == 1 {
                            lines.remove(parent);
                        }
                    }
                }
            }
            (None, None) => {}
            (None, Some(value)) => {
                let at = children.last().map_or(parent + 1, |&i| i + 1);
                if !lines[at - 1].ends_with('\n') {
                    lines[at - 1].push_str(nl);
                }
                let line = format!(
                    "{}{}: {}{nl}",
                    " ".repeat(child_indent),
                    string(&edit.key),
                    scalar(value).ok()?
                );
                lines.insert(at, line);
            }
        }
        Some(lines.concat())
    }
}

/// The text of a new document (block style, strings double-quoted), ending with a newline.
pub fn render(value: &Value) -> Result<String, EditError> {
    let mut out = String::new();
    match value {
        Value::Mapping(map) if !map.is_empty() => emit_mapping(map, 0, &mut out)?,
        other => {
            out.push_str(&scalar(other)?);
            out.push('\n');
        }
    }
    Ok(out)
}

fn emit_mapping(map: &Mapping, indent: usize, out: &mut String) -> Result<(), EditError> {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&match key {
            Value::String(k) => string(k),
            other => scalar(other)?,
        });
        out.push(':');
        match value {
            Value::Mapping(m) if !m.is_empty() => {
                out.push('\n');
                emit_mapping(m, indent + 2, out)?;
            }
            Value::Sequence(s) if !s.is_empty() => {
                out.push('\n');
                emit_sequence(s, indent + 2, out)?;
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other)?);
                out.push('\n');
            }
        }
    }
    Ok(())
}

fn emit_sequence(seq: &[Value], indent: usize, out: &mut String) -> Result<(), EditError> {
    for item in seq {
        match item {
            Value::Mapping(m) if !m.is_empty() => {
                // The first key goes on the dash's line: `- name: x`.
                let mut inner = String::new();
                emit_mapping(m, indent + 2, &mut inner)?;
                out.push_str(&" ".repeat(indent));
                out.push_str("- ");
                out.push_str(&inner[indent + 2..]);
            }
            Value::Sequence(s) if !s.is_empty() => {
                out.push_str(&" ".repeat(indent));
                out.push_str("-\n");
                emit_sequence(s, indent + 2, out)?;
            }
            other => {
                out.push_str(&" ".repeat(indent));
                out.push_str("- ");
                out.push_str(&scalar(other)?);
                out.push('\n');
            }
        }
    }
    Ok(())
}

/// A scalar (or an empty collection) as YAML text.
fn scalar(value: &Value) -> Result<String, EditError> {
    Ok(match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Mapping(m) if m.is_empty() => "{}".to_owned(),
        Value::Sequence(s) if s.is_empty() => "[]".to_owned(),
        Value::Mapping(_) | Value::Sequence(_) => {
            return Err(EditError(
                "a nested value cannot be written inline".to_owned(),
            ));
        }
        Value::Tagged(_) => {
            return Err(EditError(
                "the document uses YAML tags (`!…`); edit it by hand".to_owned(),
            ));
        }
    })
}

/// A string, plain when no YAML reader can take it for anything else (`ext-1001`), else
/// double-quoted (`"1001"`, `"yes"`, `"a: b"`).
fn string(key: &str) -> String {
    const YAML11_WORDS: [&str; 9] = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !YAML11_WORDS.contains(&key.to_ascii_lowercase().as_str());
    if plain {
        key.to_owned()
    } else {
        serde_json::to_string(key).unwrap_or_else(|_| key.to_owned())
    }
}

/// The intended value after `edit`.
fn apply_to_value(doc: &mut Value, edit: &FieldEdit) -> Result<(), EditError> {
    let Value::Mapping(top) = doc else {
        return Err(EditError("the document is not a mapping".to_owned()));
    };
    let parent_key = Value::String(edit.parent.clone());
    let key = Value::String(edit.key.clone());
    match &edit.value {
        Some(value) => {
            let parent = top
                .entry(parent_key)
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            if !parent.is_mapping() {
                *parent = Value::Mapping(Mapping::new());
            }
            if let Value::Mapping(m) = parent {
                m.insert(key, value.clone());
            }
        }
        None => {
            let emptied = match top.get_mut(&parent_key) {
                Some(Value::Mapping(m)) => m.shift_remove(&key).is_some() && m.is_empty(),
                _ => false,
            };
            if emptied {
                top.shift_remove(&parent_key);
            }
        }
    }
    Ok(())
}

/// Parses one document; `None` when it does not parse or holds several.
fn parse_document(doc: &str) -> Option<Value> {
    let doc = doc.strip_prefix('\u{feff}').unwrap_or(doc);
    serde_norway::from_str(doc).ok()
}

/// `---` alone or followed by a space, a tab or the line end.
fn is_marker(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// `---` with nothing but a comment after it.
fn is_bare_marker(line: &str) -> bool {
    is_marker(line) && {
        let rest = line[3..].trim();
        rest.is_empty() || rest.starts_with('#')
    }
}

/// `...` (a document's end) with nothing but a comment after it.
fn is_end_marker(line: &str) -> bool {
    line.strip_prefix("...").is_some_and(|rest| {
        let rest = rest.trim();
        rest.is_empty() || rest.starts_with('#')
    })
}

/// Neither blank nor a comment.
fn is_content(line: &str) -> bool {
    let trimmed = line.trim_start_matches('\u{feff}').trim();
    !trimmed.is_empty() && !trimmed.starts_with('#')
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// `key:` at exactly `indent` spaces, followed by a space, a tab or the line end.
fn is_key_line(line: &str, at: usize, key: &str) -> bool {
    indent(line) == at
        && line[at..]
            .strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t', '\r', '\n']))
}

/// What follows `key:` on its line, without a trailing comment (empty for a block).
fn rest_after_key<'a>(line: &'a str, key: &str) -> &'a str {
    let after = line.trim_start_matches(' ');
    let rest = after.get(key.len() + 1..).unwrap_or("").trim();
    if rest.starts_with('#') { "" } else { rest }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# Extension 1001 and its password.\n\
        apiVersion: kubepbx.io/v1alpha1\n\
        kind: Extension\n\
        metadata:\n  name: ext-1001\n  namespace: default\n\
        spec:\n  extension: \"1001\"\n  # domain: pbx.example.com\n  displayName: Reception\n\
        \x20 passwordSecretRef:\n    name: ext-1001\n    key: password\n  enabled: true\n\
        ---\n\
        # Another tool's document, kept as it is.\n\
        apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\ndata: {a: \"1\"}   # odd spacing\n\
        ---\n\
        apiVersion: v1\nkind: Secret\nmetadata:\n  name: ext-1001\ntype: Opaque\n\
        data:\n  password: Y2hhbmdlLW1l\n  other: eA==\n";

    fn ext() -> DocumentId {
        DocumentId::extension("default", "ext-1001")
    }

    fn secret() -> DocumentId {
        DocumentId::secret("default", "ext-1001")
    }

    #[test]
    fn documents_are_found_by_kind_namespace_and_name() {
        let text = ManifestText::parse(FILE);
        assert_eq!(text.text(), FILE);
        assert_eq!(text.find(&ext()), Some(0));
        assert_eq!(text.find(&secret()), Some(2));
        assert_eq!(text.find(&DocumentId::secret("other", "ext-1001")), None);
        assert_eq!(
            text.find(&DocumentId::extension("default", "ext-1002")),
            None
        );
    }

    #[test]
    fn a_field_change_edits_one_line_and_keeps_comments() {
        let mut text = ManifestText::parse(FILE);
        text.set_fields(0, &[FieldEdit::set("spec", "enabled", false)])
            .expect("edits");
        let new = text.text();
        assert_eq!(new, FILE.replace("  enabled: true\n", "  enabled: false\n"));

        text.set_fields(
            0,
            &[
                FieldEdit::set("spec", "maxContacts", 7u32),
                FieldEdit::remove("spec", "displayName"),
            ],
        )
        .expect("edits");
        let new = text.text();
        assert!(new.contains("  # domain: pbx.example.com\n"), "{new}");
        assert!(
            new.contains("  enabled: false\n  maxContacts: 7\n---\n"),
            "added after the last field: {new}"
        );
        assert!(!new.contains("displayName"));
        assert!(new.ends_with(&FILE[FILE.find("---\n# Another").expect("marker")..]));
    }

    #[test]
    fn a_password_goes_to_string_data_and_leaves_data() {
        let mut text = ManifestText::parse(FILE);
        let i = text.find(&secret()).expect("secret");
        text.set_fields(
            i,
            &[
                FieldEdit::set("stringData", "password", "yes: \"new\""),
                FieldEdit::remove("data", "password"),
            ],
        )
        .expect("edits");
        let new = text.text();
        let value = text.value(i).expect("parses");
        assert_eq!(
            value["stringData"]["password"].as_str(),
            Some("yes: \"new\"")
        );
        assert_eq!(value["data"]["other"].as_str(), Some("eA=="));
        assert!(value["data"].get("password").is_none());
        assert!(new.starts_with(&FILE[..FILE.find("apiVersion: v1\nkind: Secret").expect("s")]));
    }

    #[test]
    fn an_emptied_mapping_goes_away() {
        let file = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata:\n  password: eA==\n";
        let mut text = ManifestText::parse(file);
        text.set_fields(
            0,
            &[
                FieldEdit::set("stringData", "password", "p"),
                FieldEdit::remove("data", "password"),
            ],
        )
        .expect("edits");
        assert_eq!(
            text.text(),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData:\n  password: p\n"
        );
    }

    #[test]
    fn flow_style_is_rewritten_with_the_comments_around_it() {
        let file = "# head\n---   # marker comment\n# before\napiVersion: kubepbx.io/v1alpha1\n\
                    kind: Extension\nmetadata: {name: e, labels: {team: a}}\n\
                    spec: {extension: \"1\", passwordSecretRef: {name: e}, enabled: true}\n\
                    # after\n---\nkind: Other\n";
        let mut text = ManifestText::parse(file);
        let i = text
            .find(&DocumentId::extension("default", "e"))
            .expect("found");
        assert_eq!(i, 1);
        text.set_fields(i, &[FieldEdit::set("spec", "enabled", false)])
            .expect("rewrites");
        let new = text.text();
        assert!(
            new.starts_with("# head\n---   # marker comment\n# before\n"),
            "{new}"
        );
        assert!(new.ends_with("# after\n---\nkind: Other\n"), "{new}");
        let value = text.value(i).expect("parses");
        assert_eq!(value["spec"]["enabled"], Value::Bool(false));
        assert_eq!(value["metadata"]["labels"]["team"].as_str(), Some("a"));
        assert!(new.contains("  extension: \"1\"\n"), "{new}");
    }

    #[test]
    fn removing_documents_keeps_the_others_byte_for_byte() {
        let mut text = ManifestText::parse(FILE);
        text.remove(2);
        text.remove(0);
        let other = &FILE[FILE.find("---\n# Another").expect("m")..FILE.rfind("---\n").expect("m")];
        assert_eq!(text.text(), other);
        assert!(!text.is_blank());
        text.remove(0);
        assert!(text.is_blank());

        let comments_only = ManifestText::parse("# just a note\n---\n\n...\n");
        assert!(comments_only.is_blank());
    }

    #[test]
    fn a_pushed_document_follows_a_marker_and_keeps_crlf() {
        let mut text = ManifestText::parse("kind: A\r\nb: 1");
        let mut map = Mapping::new();
        map.insert("kind".into(), "Secret".into());
        map.insert("yes".into(), "no".into());
        text.push(&Value::Mapping(map)).expect("pushes");
        assert_eq!(
            text.text(),
            "kind: A\r\nb: 1\r\n---\r\nkind: Secret\r\n\"yes\": \"no\"\r\n"
        );
    }

    #[test]
    fn rendering_quotes_strings_and_nests_blocks() {
        let value: Value = serde_norway::from_str(
            "a: {b: [1, {c: d, e: '1'}, ['on']], g: {}}\nh: 'line\n\n  two'\nnothing: null\n",
        )
        .expect("yaml");
        let text = render(&value).expect("renders");
        assert_eq!(
            text,
            "a:\n  b:\n    - 1\n    - c: d\n      e: \"1\"\n    -\n      - \"on\"\n  g: {}\n\
             h: \"line\\ntwo\"\nnothing: null\n"
        );
        let back: Value = serde_norway::from_str(&text).expect("yaml");
        assert_eq!(back, value);
    }

    #[test]
    fn tags_are_refused_and_nothing_changes() {
        let file = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: !t Opaque\nstringData: {password: x}\n";
        let mut text = ManifestText::parse(file);
        let i = text
            .find(&DocumentId::secret("default", "s"))
            .expect("found");
        let e = text
            .set_fields(i, &[FieldEdit::set("stringData", "password", "y")])
            .expect_err("refused");
        assert!(e.to_string().contains("by hand"), "{e}");
        assert_eq!(text.text(), file);
    }
}
