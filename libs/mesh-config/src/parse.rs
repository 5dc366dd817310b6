//! Reading Istio resources from multi-document YAML (JSON being a subset).
//!
//! Each document is read strictly into its kind's types. A problem is reported
//! with the file, the document's position in it, the field path
//! (`spec.http[0].route[1].weight`) and the line, so a user can go straight to it.

use std::fmt;

use serde::Deserialize;

use crate::kinds::{AnyResource, Kind};

/// A resource read from a file, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedResource {
    pub resource: AnyResource,
    pub location: DocumentLocation,
}

/// Where a document sits: the file, its 1-based index among the file's
/// non-empty documents, and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentLocation {
    pub file: String,
    pub document: usize,
    pub first_line: usize,
}

/// Why one document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub location: DocumentLocation,
    /// Path of the offending field, e.g. `spec.http[0].timeout`; `None` when the
    /// document as a whole is at fault (e.g. malformed YAML).
    pub field_path: Option<String>,
    /// 1-based line of the problem in the file.
    pub line: usize,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: document {}, line {}",
            self.location.file, self.location.document, self.line
        )?;
        if let Some(column) = self.column {
            write!(f, ", column {column}")?;
        }
        match &self.field_path {
            Some(path) => write!(f, ": {path}: {}", self.message),
            None => write!(f, ": {}", self.message),
        }
    }
}

/// The largest document read, in bytes. Kubernetes refuses requests over
/// about 3 MiB (etcd's limit), so no real resource comes near it.
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// The most YAML aliases (`*name`) one document may hold. Istio's resources
/// need none; a few are tolerated for hand-written files, hundreds are the
/// shape of an expansion bomb ("billion laughs").
pub const MAX_DOCUMENT_ALIASES: usize = 100;

/// Reads every document of `text` (named `file` in errors). Empty documents are
/// skipped; each other document yields a resource or an error, in file order,
/// so one bad document never hides the good ones. A document larger than
/// [`MAX_DOCUMENT_BYTES`] or with more than [`MAX_DOCUMENT_ALIASES`] aliases
/// is refused before it is parsed.
pub fn parse_documents(file: &str, text: &str) -> Vec<Result<ParsedResource, ParseError>> {
    split_documents(text)
        .into_iter()
        .enumerate()
        .map(|(index, chunk)| {
            let location = DocumentLocation {
                file: file.to_string(),
                document: index + 1,
                first_line: chunk.first_line,
            };
            check_limits(&chunk, &location)?;
            parse_document(&chunk, location)
        })
        .collect()
}

/// Refuses a document too large or too alias-laden to parse safely, so
/// neither time nor memory depends on what an attacker expands.
fn check_limits(chunk: &DocumentChunk, location: &DocumentLocation) -> Result<(), ParseError> {
    let refuse = |message: String| ParseError {
        location: location.clone(),
        field_path: None,
        line: chunk.first_line,
        column: None,
        message,
    };
    if chunk.text.len() > MAX_DOCUMENT_BYTES {
        return Err(refuse(format!(
            "document too large: {} bytes, the limit is {MAX_DOCUMENT_BYTES}",
            chunk.text.len()
        )));
    }
    let aliases = count_aliases(&chunk.text);
    if aliases > MAX_DOCUMENT_ALIASES {
        return Err(refuse(format!(
            "document refused: {aliases} YAML aliases, the limit is {MAX_DOCUMENT_ALIASES} (alias expansion could exhaust memory)"
        )));
    }
    // A few aliases can still nest into an exponential expansion ("billion
    // laughs" needs only 81). No alias works without an anchor, so only
    // documents holding a `&` are walked, counting nodes as the parser
    // expands them, without keeping any.
    if chunk.text.contains('&') {
        let budget = expansion_budget(chunk.text.len());
        if !expands_within(&chunk.text, budget) {
            return Err(refuse(format!(
                "document refused: its YAML aliases expand to more than {budget} nodes or too many times (alias expansion could exhaust memory)"
            )));
        }
    }
    Ok(())
}

/// How many nodes a document of `len` bytes may expand to: about twice what
/// it could hold without aliases.
fn expansion_budget(len: usize) -> usize {
    2 * len + 10_000
}

/// Whether `text`, with every alias expanded, has at most `budget` nodes
/// (and stays within the parser's own limit on alias jumps). Syntax errors
/// count as within budget: the real parse reports them.
fn expands_within(text: &str, budget: usize) -> bool {
    use serde::de::DeserializeSeed;
    let remaining = std::cell::Cell::new(budget);
    match NodeCounter(&remaining).deserialize(serde_yaml_ng::Deserializer::from_str(text)) {
        Ok(()) => true,
        Err(error) => remaining.get() > 0 && !error.to_string().contains("repetition limit"),
    }
}

/// Walks any YAML value, spending one unit of its budget per node, and
/// stops with an error once the budget is spent.
struct NodeCounter<'a>(&'a std::cell::Cell<usize>);

impl NodeCounter<'_> {
    fn spend<E: serde::de::Error>(&self) -> Result<(), E> {
        match self.0.get().checked_sub(1) {
            Some(left) => {
                self.0.set(left);
                Ok(())
            }
            None => Err(E::custom("node budget spent")),
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for NodeCounter<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for NodeCounter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.spend()
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.spend()
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.spend()
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.spend()
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.spend()
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.spend()
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.spend()
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.spend()?;
        deserializer.deserialize_any(self)
    }

    fn visit_newtype_struct<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<(), D::Error> {
        self.spend()?;
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.spend()?;
        while seq.next_element_seed(NodeCounter(self.0))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.spend()?;
        while map.next_key_seed(NodeCounter(self.0))?.is_some() {
            map.next_value_seed(NodeCounter(self.0))?;
        }
        Ok(())
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        use serde::de::VariantAccess;
        self.spend()?;
        let ((), variant) = data.variant_seed(NodeCounter(self.0))?;
        variant.newtype_variant_seed(NodeCounter(self.0))
    }
}

/// Counts YAML aliases (`*name`) where a node may start: at the start of a
/// line's content or after `:`, `-`, `?`, `[`, `{` or `,` (and spaces), never
/// inside quotes or comments. A glob such as `/api/*` is not an alias; a
/// quoted `"*.example.com"` is not either. The count may include the odd
/// `*word` at the start of a block scalar line, which only matters past the
/// limit.
fn count_aliases(text: &str) -> usize {
    let mut aliases = 0;
    for line in text.lines() {
        let mut node_may_start = true;
        let mut quote: Option<char> = None;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if let Some(open) = quote {
                if c == open {
                    quote = None;
                } else if c == '\\' && open == '"' {
                    chars.next();
                }
                continue;
            }
            match c {
                '#' if node_may_start => break,
                '"' | '\'' if node_may_start => quote = Some(c),
                '*' if node_may_start => {
                    if chars.peek().is_some_and(|next| is_anchor_char(*next)) {
                        aliases += 1;
                    }
                    node_may_start = false;
                }
                ' ' | '\t' => {}
                ':' | '-' | '?' | '[' | '{' | ',' => node_may_start = true,
                _ => node_may_start = false,
            }
        }
    }
    aliases
}

/// Characters an anchor name may hold (YAML: any non-space, non-flow
/// indicator character).
fn is_anchor_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, ',' | '[' | ']' | '{' | '}')
}

/// Like [`parse_documents`], but all-or-nothing: every error, or every resource.
pub fn parse_all(file: &str, text: &str) -> Result<Vec<ParsedResource>, Vec<ParseError>> {
    let (resources, errors): (Vec<_>, Vec<_>) = parse_documents(file, text)
        .into_iter()
        .partition(Result::is_ok);
    if errors.is_empty() {
        Ok(resources.into_iter().map(Result::unwrap).collect())
    } else {
        Err(errors.into_iter().map(Result::unwrap_err).collect())
    }
}

/// The text of one YAML document and where it sits in the file.
struct DocumentChunk {
    text: String,
    /// Lines of the file before `text` begins; added to the YAML parser's
    /// line numbers to report the file's.
    line_offset: usize,
    /// The document's first line holding content.
    first_line: usize,
}

/// Splits a YAML stream on `---` document markers (and drops `...` end
/// markers). A marker must start at column 0, which YAML also requires, so a
/// `---` inside an indented block scalar is left alone.
fn split_documents(text: &str) -> Vec<DocumentChunk> {
    let mut chunks = Vec::new();
    let mut current: Option<DocumentChunk> = None;
    let mut has_content = false;
    let mut in_document = true;
    let mut finish = |chunk: Option<DocumentChunk>, has_content: bool| {
        if let Some(chunk) = chunk.filter(|_| has_content) {
            chunks.push(chunk);
        }
    };
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        if is_marker(line, "---") {
            finish(current.take(), has_content);
            // Content may follow the marker on the same line (`--- {a: 1}`);
            // blanking the marker keeps columns right.
            let rest = &line[3..];
            current = Some(DocumentChunk {
                text: format!("   {rest}\n"),
                line_offset: index,
                first_line: line_number,
            });
            has_content = !is_blank(rest);
            in_document = true;
            continue;
        }
        if is_marker(line, "...") {
            in_document = false;
            continue;
        }
        if !in_document {
            continue;
        }
        let chunk = current.get_or_insert_with(|| DocumentChunk {
            text: String::new(),
            line_offset: index,
            first_line: line_number,
        });
        if !has_content && !is_blank(line) {
            has_content = true;
            chunk.first_line = line_number;
        }
        chunk.text.push_str(line);
        chunk.text.push('\n');
    }
    finish(current, has_content);
    chunks
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '#']))
}

/// Whether a line holds nothing but white space and comments.
fn is_blank(line: &str) -> bool {
    let trimmed = line.trim_start();
    trimmed.is_empty() || trimmed.starts_with('#')
}

/// Just enough of a document to know which type to read it as.
#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
}

fn parse_document(
    chunk: &DocumentChunk,
    location: DocumentLocation,
) -> Result<ParsedResource, ParseError> {
    let error_at = |field_path: Option<&str>, line: usize, column, message: String| ParseError {
        location: location.clone(),
        field_path: field_path.map(str::to_string),
        line,
        column,
        message,
    };
    let type_meta: TypeMeta = serde_yaml_ng::from_str(&chunk.text).map_err(|e| {
        let (line, column) = yaml_position(&e, chunk).unwrap_or((chunk.first_line, None));
        error_at(None, line, column, describe_top_level(&e))
    })?;
    let key_line = |key| {
        top_level_key_line(&chunk.text, key)
            .map(|line| line + chunk.line_offset)
            .unwrap_or(chunk.first_line)
    };
    let Some(api_version) = type_meta.api_version else {
        return Err(error_at(
            Some("apiVersion"),
            chunk.first_line,
            None,
            "missing".into(),
        ));
    };
    let Some(kind_name) = type_meta.kind else {
        return Err(error_at(
            Some("kind"),
            chunk.first_line,
            None,
            "missing".into(),
        ));
    };
    let kind = Kind::resolve(&api_version, &kind_name).map_err(|e| {
        let field = match e {
            crate::kinds::KindError::UnknownKind { .. } => "kind",
            crate::kinds::KindError::UnservedVersion { .. } => "apiVersion",
        };
        error_at(Some(field), key_line(field), None, e.to_string())
    })?;

    let deserializer = serde_yaml_ng::Deserializer::from_str(&chunk.text);
    let resource = AnyResource::deserialize_as(kind, deserializer).map_err(|e| {
        let (line, column) = yaml_position(e.inner(), chunk).unwrap_or((chunk.first_line, None));
        let message = e.inner().to_string();
        let message = strip_position_suffix(&message);
        let path = field_path(&e.path().to_string(), message);
        error_at(Some(&path), line, column, message.to_string())
    })?;
    Ok(ParsedResource { resource, location })
}

/// The file line and column of a YAML error inside `chunk`.
fn yaml_position(
    error: &serde_yaml_ng::Error,
    chunk: &DocumentChunk,
) -> Option<(usize, Option<usize>)> {
    error
        .location()
        .map(|l| (l.line() + chunk.line_offset, Some(l.column())))
}

/// serde_yaml's messages end with " at line L column C"; we report those
/// separately, so drop the suffix.
fn strip_position_suffix(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(at) => &message[..at],
        None => message,
    }
}

/// A top-level error (malformed YAML, not a mapping) in words a user knows.
fn describe_top_level(error: &serde_yaml_ng::Error) -> String {
    let message = error.to_string();
    let message = strip_position_suffix(&message);
    if message.starts_with("invalid type") {
        format!("a resource must be a mapping with apiVersion and kind ({message})")
    } else {
        message.to_string()
    }
}

/// The path of the field at fault. For an unknown field serde points at the
/// enclosing object, so the field's own name is appended.
pub(crate) fn field_path(path: &str, message: &str) -> String {
    let path = if path == "." { "" } else { path };
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next());
    match unknown {
        Some(name) if !path.ends_with(name) => {
            if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            }
        }
        _ if path.is_empty() => "(document)".to_string(),
        _ => path.to_string(),
    }
}

/// The line of a top-level `key:` in a document, for errors about it.
fn top_level_key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|index| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_keeps_file_line_numbers() {
        let text = "# leading comment\n---\na: 1\n---\n\n# only a comment\n---\nb: 2\nc: |\n  ---\n  x\n...\nignored: true\n";
        let chunks = split_documents(text);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].first_line, 3);
        assert_eq!(chunks[1].first_line, 8);
        assert_eq!(chunks[1].line_offset, 6);
        assert_eq!(chunks[1].text.lines().nth(1), Some("b: 2"));
        assert!(chunks[1].text.contains("  ---\n"));
        assert!(!chunks[1].text.contains("ignored"));
    }

    #[test]
    fn content_after_a_marker_belongs_to_the_new_document() {
        let chunks = split_documents("--- {a: 1}\n");
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].first_line, 1);
    }

    #[test]
    fn counts_aliases_but_not_globs_or_quoted_stars() {
        let text = "a: &x [1]\nb: *x\nc: [*x, *x]\n- *x\nhosts: [\"*\", '*.a.com']\npath: /api/*\nre: a*b\n# *x\nd: \"*x\" # *x\n";
        assert_eq!(count_aliases(text), 4);
    }

    #[test]
    fn counts_nodes_as_aliases_expand() {
        assert!(expands_within("a: &x [1, 2, 3]\nb: *x\n", 11));
        assert!(!expands_within("a: &x [1, 2, 3]\nb: *x\n", 10));
        assert!(
            expands_within("not: [valid", 100),
            "syntax errors are left to the parser"
        );
    }

    #[test]
    fn unknown_field_paths_name_the_field() {
        assert_eq!(
            field_path("spec.http[0]", "unknown field `rout`, expected ..."),
            "spec.http[0].rout"
        );
        assert_eq!(
            field_path(".", "unknown field `specs`, expected ..."),
            "specs"
        );
        assert_eq!(
            field_path("spec.hosts", "invalid type: integer"),
            "spec.hosts"
        );
    }
}
