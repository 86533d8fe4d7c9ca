//! `palisade lint`: the admission analysis over manifests, with no cluster.
//!
//! Input is what CI has: files and directories of YAML or JSON (several documents per file,
//! `kind: List`), or Helm-rendered output on stdin. Every policy is read as the webhook would read
//! it; Namespaces, Pods and Nodes among the inputs feed the checks that compare policies with
//! objects. Each finding is placed at its file and line, at the field when the YAML is in block
//! style (the usual case), else at the start of its document.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use palisade_engine::analysis::{Check, Finding, Severity, analyze};
use palisade_engine::model::{Cluster, Policy, PolicyRef};
use serde::Serialize;
use serde_json::{Value, json};

use crate::objects::{self, Object};

/// One input: a file's path (or `-` for stdin) and its text.
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LintError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

/// The files to read: each path as given, directories walked in name order for `.yaml`, `.yml`
/// and `.json` files.
pub fn sources(paths: &[PathBuf]) -> Result<Vec<Source>, LintError> {
    let mut files = Vec::new();
    for path in paths {
        walk(path, true, &mut files)?;
    }
    files
        .into_iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(&path).map_err(|source| LintError::Read { path: path.clone(), source })?;
            Ok(Source { name: path.display().to_string(), text })
        })
        .collect()
}

fn walk(path: &Path, named: bool, files: &mut Vec<PathBuf>) -> Result<(), LintError> {
    let read_error = |source| LintError::Read { path: path.to_owned(), source };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if !metadata.is_dir() {
        let manifest = path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml" || ext == "json");
        // A file named on the command line is read whatever its name; inside directories only manifests.
        if named || manifest {
            files.push(path.to_owned());
        }
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_error)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()
        .map_err(read_error)?;
    entries.sort();
    for entry in entries {
        walk(&entry, false, files)?;
    }
    Ok(())
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub severity: Severity,
    pub check: Check,
    /// `ClusterNetworkPolicy deny-web`, `NetworkPolicy shop/allow-web`.
    pub object: String,
    pub field: String,
    pub message: String,
    /// The other policy of a conflict, with its place.
    pub related: Option<RelatedPlace>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RelatedPlace {
    pub object: String,
    pub file: String,
    pub line: usize,
    pub field: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub files: usize,
    pub policies: usize,
    pub diagnostics: Vec<Diagnostic>,
}

/// Where a document starts, and the path of an object inside it (`items[3]` in a List).
#[derive(Clone, Debug)]
struct Place {
    source: usize,
    first_line: usize,
    prefix: String,
}

/// One YAML or JSON document of a source, parsed.
#[derive(Clone, Debug)]
pub struct Document {
    pub source: usize,
    /// The line (1-based) the document starts on.
    pub first_line: usize,
    pub value: Value,
}

/// Splits every source into documents and parses them; documents that do not parse become
/// error diagnostics. This is all of lint's reading (`make bench` compares lint with it).
pub fn parse(sources: &[Source]) -> (Vec<Document>, Vec<Diagnostic>) {
    let mut parsed = Vec::new();
    let mut diagnostics = Vec::new();
    for (index, source) in sources.iter().enumerate() {
        for (first_line, document) in documents(&source.text) {
            match serde_saphyr::from_str::<Value>(&document) {
                Ok(value) => parsed.push(Document { source: index, first_line, value }),
                Err(error) => diagnostics.push(Diagnostic {
                    file: source.name.clone(),
                    line: first_line,
                    severity: Severity::Error,
                    check: Check::Invalid,
                    object: "document".into(),
                    field: String::new(),
                    message: format!("not YAML or JSON: {error}"),
                    related: None,
                }),
            }
        }
    }
    (parsed, diagnostics)
}

/// Reads every source and analyses the policies together.
pub fn lint(sources: &[Source]) -> Report {
    let (parsed, diagnostics) = parse(sources);
    let mut report = Report { files: sources.len(), diagnostics, ..Report::default() };
    let mut policies: Vec<Policy> = Vec::new();
    let mut places: BTreeMap<PolicyRef, Place> = BTreeMap::new();
    let mut objects = Cluster::default();
    let mut pods_known = false;
    for Document { source: index, first_line, value } in &parsed {
        let (index, first_line) = (*index, *first_line);
        let source = &sources[index];
        let items: Vec<(String, &Value)> = if objects::is_list(value) {
            value["items"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, item)| (format!("items[{i}]"), item))
                .collect()
        } else if value.is_null() {
            Vec::new()
        } else {
            vec![(String::new(), value)]
        };
        for (prefix, item) in items {
            let place = Place { source: index, first_line, prefix };
            match objects::read(item, "default") {
                Ok(Object::Policy(policy)) => {
                    // As `kubectl apply` would, a later definition replaces an earlier one.
                    let reference = policy.reference();
                    if let Some(earlier) = places.get(&reference) {
                        let earlier_source = &sources[earlier.source];
                        report.diagnostics.push(Diagnostic {
                            file: earlier_source.name.clone(),
                            line: locate(&earlier_source.text, earlier, ""),
                            severity: Severity::Warning,
                            check: Check::Duplicate,
                            object: reference.to_string(),
                            field: String::new(),
                            message: format!(
                                "defined again at {}:{}; only that later definition is checked, as it is the one that would apply",
                                source.name,
                                locate(&source.text, &place, "")
                            ),
                            related: None,
                        });
                        policies.retain(|kept| kept.reference() != reference);
                    }
                    places.insert(reference, place);
                    policies.push(policy);
                }
                Ok(Object::Namespace(namespace)) => {
                    objects.namespaces.insert(namespace.name.clone(), namespace);
                }
                Ok(Object::Pod(mut pod)) => {
                    // A manifest's pod is not scheduled yet; for "does anything match" it counts.
                    pod.node.get_or_insert_with(|| "<manifest>".into());
                    pods_known = true;
                    objects.pods.insert(pod.key.clone(), pod);
                }
                Ok(Object::Node(node)) => {
                    objects.nodes.insert(node.name.clone(), node);
                }
                Ok(Object::Skipped { .. }) => {}
                Err(error) => report.diagnostics.push(Diagnostic {
                    file: source.name.clone(),
                    line: locate(&source.text, &place, &error.field),
                    severity: Severity::Error,
                    check: Check::Invalid,
                    object: error.object.clone(),
                    field: error.field.clone(),
                    message: error.message.clone(),
                    related: None,
                }),
            }
        }
    }
    report.policies = policies.len();
    let known = pods_known || !objects.nodes.is_empty();
    for finding in analyze(&policies, known.then_some(&objects)) {
        report.diagnostics.push(diagnostic(&finding, sources, &places));
    }
    report.diagnostics.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    report
}

fn object_name(policy: &PolicyRef) -> String {
    policy.to_string()
}

fn diagnostic(finding: &Finding, sources: &[Source], places: &BTreeMap<PolicyRef, Place>) -> Diagnostic {
    let at = |policy: &PolicyRef, field: &str| -> (String, usize) {
        match places.get(policy) {
            Some(place) => (sources[place.source].name.clone(), locate(&sources[place.source].text, place, field)),
            None => ("-".into(), 1),
        }
    };
    let (file, line) = at(&finding.policy, &finding.field);
    let related = finding.related.as_ref().map(|related| {
        let (file, line) = at(&related.policy, &related.field);
        RelatedPlace { object: object_name(&related.policy), file, line, field: related.field.clone() }
    });
    Diagnostic {
        file,
        line,
        severity: finding.severity,
        check: finding.check,
        object: object_name(&finding.policy),
        field: finding.field.clone(),
        message: finding.message.clone(),
        related,
    }
}

/// The documents of a YAML stream, each with the line (1-based) it starts on.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut current = String::new();
    let mut first_line = 1;
    for (index, line) in text.lines().enumerate() {
        if line.starts_with("---") {
            if !current.trim().is_empty() {
                found.push((first_line, std::mem::take(&mut current)));
            }
            current.clear();
            first_line = index + 2;
            // `--- {…}` carries content on the marker line.
            let rest = line.trim_start_matches('-').trim();
            if !rest.is_empty() {
                first_line = index + 1;
                current.push_str(rest);
                current.push('\n');
            }
            continue;
        }
        if line.starts_with("...") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    if !current.trim().is_empty() {
        found.push((first_line, current));
    }
    found
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut found = Vec::new();
    for part in path.split('.').filter(|part| !part.is_empty()) {
        let (key, indexes) = part.split_once('[').map_or((part, ""), |(key, rest)| (key, rest));
        if !key.is_empty() {
            found.push(Segment::Key(key));
        }
        for index in indexes.split('[') {
            if let Ok(index) = index.trim_end_matches(']').parse() {
                found.push(Segment::Index(index));
            }
        }
    }
    found
}

/// The line (1-based) of `field` in the object at `place`: followed through block-style YAML
/// key by key and item by item; where it cannot be followed, the deepest line found.
fn locate(text: &str, place: &Place, field: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let path = match (place.prefix.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (false, true) => place.prefix.clone(),
        (false, false) => format!("{}.{field}", place.prefix),
    };
    let mut position = place.first_line.saturating_sub(1);
    let mut indent: Option<usize> = None;
    let mut on_item = false;
    let column = |line: &str| line.len() - line.trim_start().len();
    let meaningful = |line: &str| !line.trim().is_empty() && !line.trim_start().starts_with('#');
    for segment in segments(&path) {
        match segment {
            Segment::Key(key) => {
                let start = if on_item { position } else { position + usize::from(indent.is_some()) };
                let wanted = format!("{key}:");
                let mut found = None;
                for (index, line) in lines.iter().enumerate().skip(start) {
                    if !meaningful(line) {
                        continue;
                    }
                    let content = line.trim_start();
                    let (content, offset) = match content.strip_prefix("- ") {
                        Some(rest) => (rest.trim_start(), column(line) + (content.len() - rest.trim_start().len())),
                        None => (content, column(line)),
                    };
                    if index > start
                        && indent.is_some_and(|indent| column(line) <= indent)
                        && !(on_item && index == position)
                    {
                        break;
                    }
                    if content.starts_with(&wanted) || content.starts_with(&format!("\"{key}\":")) {
                        found = Some((index, offset));
                        break;
                    }
                }
                let Some((index, offset)) = found else { return position + 1 };
                position = index;
                indent = Some(offset);
                on_item = false;
            }
            Segment::Index(wanted) => {
                let mut item_column = None;
                let mut count = 0;
                let mut found = None;
                for (index, line) in lines.iter().enumerate().skip(position + 1) {
                    if !meaningful(line) {
                        continue;
                    }
                    let at = column(line);
                    let is_item = line.trim_start().starts_with("- ") || line.trim() == "-";
                    match item_column {
                        None if is_item && indent.is_none_or(|indent| at >= indent) => item_column = Some(at),
                        None => break,
                        Some(c) if at < c || (at == c && !is_item) => break,
                        Some(c) if at == c => count += 1,
                        Some(_) => continue,
                    }
                    if count == wanted {
                        found = Some((index, at));
                        break;
                    }
                }
                let Some((index, at)) = found else { return position + 1 };
                position = index;
                indent = Some(at);
                on_item = true;
            }
        }
    }
    position + 1
}

// ---------------------------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------------------------

fn severity_word(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

impl Report {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error).count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Warning).count()
    }

    /// 2 with errors; 1 with warnings under `--strict`; else 0.
    pub fn exit_code(&self, strict: bool) -> i32 {
        if self.errors() > 0 {
            2
        } else if strict && self.warnings() > 0 {
            1
        } else {
            0
        }
    }

    /// Compiler style: `file:line: severity: object: field: message`.
    pub fn human(&self) -> String {
        let mut out = String::new();
        for d in &self.diagnostics {
            let field = if d.field.is_empty() { String::new() } else { format!("{}: ", d.field) };
            out.push_str(&format!(
                "{}:{}: {}: {}: {field}{} [{}]\n",
                d.file,
                d.line,
                severity_word(d.severity),
                d.object,
                d.message,
                d.check.id()
            ));
            if let Some(related) = &d.related {
                out.push_str(&format!(
                    "{}:{}: note: {}: {}: the other side of this conflict\n",
                    related.file, related.line, related.object, related.field
                ));
            }
        }
        out.push_str(&format!(
            "{} policies in {} files: {} errors, {} warnings\n",
            self.policies,
            self.files,
            self.errors(),
            self.warnings()
        ));
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|error| format!("{{\"error\": {:?}}}", error.to_string()))
    }

    /// SARIF 2.1.0, one run, one rule per check.
    pub fn sarif(&self) -> String {
        let rules: Vec<Value> = Check::ALL
            .iter()
            .map(|check| {
                json!({
                    "id": check.id(),
                    "shortDescription": { "text": check.description() },
                })
            })
            .collect();
        let results: Vec<Value> = self
            .diagnostics
            .iter()
            .map(|d| {
                let location = |file: &str, line: usize| {
                    json!({ "physicalLocation": { "artifactLocation": { "uri": file }, "region": { "startLine": line } } })
                };
                let mut result = json!({
                    "ruleId": d.check.id(),
                    "level": severity_word(d.severity),
                    "message": { "text": format!("{}: {}: {}", d.object, d.field, d.message) },
                    "locations": [location(&d.file, d.line)],
                });
                if let Some(related) = &d.related {
                    result["relatedLocations"] = json!([{
                        "id": 1,
                        "physicalLocation": location(&related.file, related.line)["physicalLocation"].clone(),
                        "message": { "text": format!("{}: {}", related.object, related.field) },
                    }]);
                }
                result
            })
            .collect();
        let log = json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": { "driver": {
                    "name": "palisade",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                } },
                "results": results,
            }],
        });
        serde_json::to_string_pretty(&log).unwrap_or_else(|error| format!("{{\"error\": {:?}}}", error.to_string()))
    }
}
