//! `scan --format sarif`: the reports as one SARIF 2.1.0 log, for CI and code-scanning services.
//! One result per finding above `safe` and per unknown or dangerous global, each located by the
//! file and the byte offset (in the pickle or zip member the result names, `file` for offsets in
//! the file itself).

use serde_json::{Value, json};

use super::{FileReport, Verdict};
use crate::torch::GlobalClass;

fn level(v: Verdict) -> &'static str {
    match v {
        Verdict::Dangerous => "error",
        Verdict::Suspicious => "warning",
        Verdict::Unscannable | Verdict::Safe => "note",
    }
}

fn location(r: &FileReport, member: Option<&str>, offset: Option<u64>) -> Value {
    let mut region = serde_json::Map::new();
    if let Some(o) = offset {
        region.insert("byteOffset".into(), json!(o));
    }
    let mut phys = json!({
        "artifactLocation": { "uri": r.path.to_string_lossy() },
    });
    if !region.is_empty() {
        phys["region"] = Value::Object(region);
    }
    let mut loc = json!({ "physicalLocation": phys });
    if let Some(m) = member {
        loc["logicalLocations"] = json!([{ "name": m, "kind": "member" }]);
    }
    loc
}

/// The SARIF 2.1.0 log of `reports`.
pub fn sarif(reports: &[FileReport]) -> Value {
    let mut results = Vec::new();
    let mut rules: Vec<String> = Vec::new();
    let rule = |id: String, rules: &mut Vec<String>| {
        if !rules.contains(&id) {
            rules.push(id.clone());
        }
        id
    };
    for r in reports {
        for g in &r.globals {
            let sev = match g.class {
                GlobalClass::Dangerous => Verdict::Dangerous,
                GlobalClass::Unknown => Verdict::Suspicious,
                _ => continue,
            };
            let id = rule(format!("global-{}", g.class), &mut rules);
            let called = if g.is_called() { ", called" } else { "" };
            results.push(json!({
                "ruleId": id,
                "level": level(sev),
                "message": { "text": format!("{} global {} ({} at byte {} of {}{called})", g.class, g.qualified(), g.opcode, g.offset, g.member) },
                "locations": [location(r, Some(&g.member), Some(g.offset as u64))],
                "properties": { "verdict": sev.as_str(), "file_verdict": r.verdict.as_str() },
            }));
        }
        for f in r.findings.iter().filter(|f| f.severity > Verdict::Safe) {
            let id = rule(f.kind.clone(), &mut rules);
            results.push(json!({
                "ruleId": id,
                "level": level(f.severity),
                "message": { "text": f.detail },
                "locations": [location(r, f.member.as_deref(), f.offset)],
                "properties": { "verdict": f.severity.as_str(), "file_verdict": r.verdict.as_str() },
            }));
        }
    }
    let rules: Vec<Value> = rules
        .iter()
        .map(|id| json!({ "id": id, "shortDescription": { "text": id } }))
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "safetensorize",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "artifacts": reports.iter().map(|r| json!({
                "location": { "uri": r.path.to_string_lossy() },
                "properties": { "format": r.format, "verdict": r.verdict.as_str() },
            })).collect::<Vec<_>>(),
            "results": results,
        }],
    })
}
