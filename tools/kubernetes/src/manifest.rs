// SPDX-License-Identifier: GPL-2.0
//! The DaemonSet manifest, for tests that it says what the binaries accept and mount where they look.

pub const TEXT: &str = include_str!("../../../deploy/kubernetes/emuv.yaml");

/// The arguments `deploy/kubernetes/emuv.yaml` gives `program` (its `args:` line after the
/// `command:` naming it), for the binaries' tests that the manifest says what they accept.
pub fn args(program: &str) -> Vec<String> {
    let mut lines = TEXT
        .lines()
        .skip_while(|l| !(l.contains("command:") && l.contains(program)));
    let command = lines.next().expect("the program's command line");
    let args = lines
        .find_map(|l| l.trim().strip_prefix("args:"))
        .expect("its args line");
    let mut all: Vec<String> =
        serde_json::from_str(command.trim().trim_start_matches("command:")).unwrap();
    all.extend(serde_json::from_str::<Vec<String>>(args.trim()).unwrap());
    all
}
