// SPDX-License-Identifier: GPL-2.0
//! Host side of the test run: adds up the TAP/KTAP results that `tests/vm/guest.sh` wrote and
//! prints the plain line `N passed, N failed, N skipped`. Exits non-zero on any failure, on a
//! program that crashed or reported nothing, and on an expected section that never ran.
//!
//!   ktap_summary RESULTS_FILE [EXPECTED_SECTION...]

use std::{collections::BTreeSet, process::ExitCode};

#[derive(Default)]
struct Section {
    name: String,
    passed: usize,
    failed: usize,
    skipped: usize,
    /// Results nested one level deeper (KUnit test cases inside a suite).
    nested: (usize, usize, usize),
    rc: Option<i32>,
    /// Where it ran: the `### VM:` line of its kernel's boot, or "host".
    ran_on: String,
    /// What the `1..N` plan lines promised, at the top level and nested.
    planned: (usize, usize),
    /// Each failed test's line, after the diagnostics printed just before it.
    failures: Vec<String>,
}

/// Diagnostics kept per failure: enough to see why without the whole results file.
const DIAGNOSTICS_KEPT: usize = 6;

/// `ok N name`, `not ok N name`, `ok N name # SKIP why`, at any indentation: (indent, ok, skip).
fn tap_result(line: &str) -> Option<(usize, bool, bool)> {
    let trimmed = line.trim_start();
    let indent = line.len() - trimmed.len();
    let (ok, rest) = if let Some(rest) = trimmed.strip_prefix("not ok ") {
        (false, rest)
    } else {
        (true, trimmed.strip_prefix("ok ")?)
    };
    rest.split_whitespace().next()?.parse::<u32>().ok()?;
    Some((indent, ok, trimmed.contains("# SKIP")))
}

/// `1..N`, at any indentation: (indent, N).
fn tap_plan(line: &str) -> Option<(usize, usize)> {
    let trimmed = line.trim_start();
    let planned = trimmed.strip_prefix("1..")?.trim().parse().ok()?;
    Some((line.len() - trimmed.len(), planned))
}

fn parse(text: &str) -> Vec<Section> {
    let mut sections = Vec::new();
    let mut current: Option<Section> = None;
    let mut diagnostics: Vec<&str> = Vec::new();
    let mut ran_on = "host".to_owned();
    for line in text.lines() {
        if let Some(vm) = line.strip_prefix("### VM: ") {
            ran_on = vm.trim().to_owned();
            continue;
        }
        if line.trim_start().starts_with('#') && !line.starts_with("###") {
            diagnostics.push(line);
            continue;
        }
        if let Some(name) = line.strip_prefix("### BEGIN ") {
            sections.extend(current.take());
            current = Some(Section {
                name: name.trim().to_owned(),
                ran_on: ran_on.clone(),
                ..Section::default()
            });
        } else if let Some(rest) = line.strip_prefix("### END ") {
            if let Some(mut s) = current.take() {
                s.rc = rest
                    .rsplit_once("rc=")
                    .and_then(|(_, rc)| rc.trim().parse().ok());
                sections.push(s);
            }
        } else if let (Some(s), Some((indent, planned))) = (current.as_mut(), tap_plan(line)) {
            if indent == 0 {
                s.planned.0 += planned;
            } else {
                s.planned.1 += planned;
            }
        } else if let (Some(s), Some((indent, ok, skip))) = (current.as_mut(), tap_result(line)) {
            let counts = if indent == 0 {
                (&mut s.passed, &mut s.failed, &mut s.skipped)
            } else {
                (&mut s.nested.0, &mut s.nested.1, &mut s.nested.2)
            };
            match (ok, skip) {
                (_, true) => *counts.2 += 1,
                (true, false) => *counts.0 += 1,
                (false, false) => {
                    *counts.1 += 1;
                    let first = diagnostics.len().saturating_sub(DIAGNOSTICS_KEPT);
                    s.failures
                        .extend(diagnostics[first..].iter().map(|d| d.to_string()));
                    s.failures.push(line.to_owned());
                }
            }
        }
        diagnostics.clear();
    }
    sections.extend(current);
    sections
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: ktap_summary RESULTS_FILE [EXPECTED_SECTION...]");
        return ExitCode::from(2);
    };
    let expected: BTreeSet<String> = args.collect();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("ktap_summary: {path}: {e}");
        String::new()
    });
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    // Totals per kernel (per VM boot), in the order they ran.
    let mut per_kernel: Vec<(String, (usize, usize, usize))> = Vec::new();
    for s in parse(&text) {
        // A KUnit suite's own line sums its cases: count the cases.
        let ((p, mut f, k), planned) = if s.nested != (0, 0, 0) {
            (s.nested, s.planned.1)
        } else {
            ((s.passed, s.failed, s.skipped), s.planned.0)
        };
        let mut why = String::new();
        // A program that stops half-way reports fewer tests than it planned.
        if p + f + k < planned {
            why = format!(" (planned {planned}, reported {})", p + f + k);
            f += planned - (p + f + k);
        }
        match s.rc {
            None => {
                f = f.max(1);
                why = " (did not finish: the VM stopped or hung)".into();
            }
            // kselftest: 0 pass, 4 skip; anything else with no failure reported is a crash.
            Some(rc) if rc != 0 && rc != 4 && f == 0 => {
                f += 1;
                why = format!(" (exited {rc} without reporting a failure)");
            }
            _ => {}
        }
        if p + f + k == 0 {
            f += 1;
            why = " (reported no test)".into();
        }
        println!("{}: {p} passed, {f} failed, {k} skipped{why}", s.name);
        passed += p;
        failed += f;
        skipped += k;
        match per_kernel.iter_mut().find(|(on, _)| *on == s.ran_on) {
            Some((_, t)) => *t = (t.0 + p, t.1 + f, t.2 + k),
            None => per_kernel.push((s.ran_on.clone(), (p, f, k))),
        }
        // CI shows the end of the output: why each test failed goes just above the totals.
        if !s.failures.is_empty() {
            failures.push(format!("--- {}:", s.name));
            failures.extend(s.failures);
        }
        seen.insert(s.name);
    }
    for missing in expected.difference(&seen) {
        println!("{missing}: did not run");
        failed += 1;
    }
    for line in failures {
        println!("{line}");
    }
    for (on, (p, f, k)) in &per_kernel {
        println!("on {on}: {p} passed, {f} failed, {k} skipped");
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
