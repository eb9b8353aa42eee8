// SPDX-License-Identifier: GPL-2.0
//! `emuv-ctk cdi generate` on the live cards: a device per card by index and by UUID and `all`,
//! each bringing the card's real device node; the mounts name files that exist; and the spec's
//! edits applied as a container runtime applies them (a private /dev holding only the device's
//! nodes, in a mount namespace of its own) give `emuv-smi` exactly that card, as index 0 with
//! its UUID. Bad input: an invalid kind is refused with exit code 2.
//!
//! Needs `emuv-ctk` and `emuv-smi` beside this program (target/release).

use emuv_tests::{
    err, module, smi_uuids,
    tap::{check, check_eq, Tap},
    tool,
};
use nix::{
    mount::{mount, MsFlags},
    sched::{unshare, CloneFlags},
    sys::{
        stat::{mknod, stat, Mode, SFlag},
        wait::{waitpid, WaitStatus},
    },
    unistd::{execv, fork, ForkResult},
};
use serde_json::Value;
use std::{ffi::CString, process::Command};

const FOUR_CARDS: &str = "gpu_count=4 gpu_model=4090 physical_vram_mb=256 virtual_vram_mb=0";

type TestResult = Result<(), String>;

fn run(program: &str, args: &[&str]) -> Result<std::process::Output, String> {
    Command::new(tool(program))
        .args(args)
        .output()
        .map_err(err(&format!("run {program}")))
}

fn spec() -> Result<Value, String> {
    let out = run("emuv-ctk", &["cdi", "generate", "--nvidia-smi"])?;
    check(out.status.success(), || {
        format!(
            "emuv-ctk cdi generate: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    serde_json::from_slice(&out.stdout).map_err(err("the spec is JSON"))
}

fn devices(spec: &Value) -> Vec<(String, Vec<(String, String)>)> {
    spec["devices"]
        .as_array()
        .map(|ds| {
            ds.iter()
                .map(|d| {
                    let nodes = d["containerEdits"]["deviceNodes"]
                        .as_array()
                        .map(|ns| {
                            ns.iter()
                                .map(|n| {
                                    (
                                        n["path"].as_str().unwrap_or("").to_owned(),
                                        n["hostPath"].as_str().unwrap_or("").to_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    (d["name"].as_str().unwrap_or("").to_owned(), nodes)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn names_nodes_and_uuids() -> TestResult {
    let spec = spec()?;
    check_eq("kind", spec["kind"].as_str(), Some("emuv.dev/gpu"))?;
    let host = run("emuv-smi", &["-L"])?;
    let uuids = smi_uuids(&String::from_utf8_lossy(&host.stdout));
    check_eq("cards emuv-smi lists", uuids.len(), 4)?;
    let devices = devices(&spec);
    let names: Vec<&str> = devices.iter().map(|(n, _)| n.as_str()).collect();
    let mut want = Vec::new();
    for (i, u) in uuids.iter().enumerate() {
        want.push(i.to_string());
        want.push(u.clone());
    }
    want.push("all".into());
    check_eq(
        "device names",
        names,
        want.iter().map(String::as_str).collect(),
    )?;
    for (i, (name, nodes)) in devices.iter().enumerate() {
        let expected = if name == "all" { 4 } else { 1 };
        check_eq(&format!("{name}'s nodes"), nodes.len(), expected)?;
        for (path, host_path) in nodes {
            let card = if name == "all" { None } else { Some(i / 2) };
            let st = stat(host_path.as_str()).map_err(err(host_path))?;
            check(
                SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR,
                || format!("{host_path} is not a character device"),
            )?;
            if let Some(card) = card {
                let node = if card == 0 {
                    "/dev/emuv".to_owned()
                } else {
                    format!("/dev/emuv{card}")
                };
                check_eq(
                    &format!("{name}'s node"),
                    (path.as_str(), host_path.as_str()),
                    (node.as_str(), node.as_str()),
                )?;
            }
        }
    }
    for m in spec["containerEdits"]["mounts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let host_path = m["hostPath"].as_str().unwrap_or("");
        check(std::path::Path::new(host_path).is_file(), || {
            format!("mount source {host_path} missing")
        })?;
    }
    let list = run("emuv-ctk", &["cdi", "list"])?;
    let listed: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(String::from)
        .collect();
    let expected: Vec<String> = want.iter().map(|n| format!("emuv.dev/gpu={n}")).collect();
    check_eq("emuv-ctk cdi list", listed, expected)
}

/// Applies device `name`'s node edits as a runtime would, in a child with a mount namespace of
/// its own and a /dev holding only those nodes, and returns what `emuv-smi -L` printed there.
fn inside_container(spec: &Value, name: &str) -> Result<Vec<String>, String> {
    let nodes = devices(spec)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, nodes)| nodes)
        .ok_or(format!("no device {name}"))?;
    // What mknod needs, read while the host's /dev is still there.
    let mut made = Vec::new();
    for (path, host_path) in &nodes {
        let st = stat(host_path.as_str()).map_err(err(host_path))?;
        made.push((path.clone(), st.st_rdev));
    }
    let (read_end, write_end) = nix::unistd::pipe().map_err(err("pipe"))?;
    let smi = CString::new(tool("emuv-smi").to_string_lossy().into_owned()).map_err(err("path"))?;
    // SAFETY: the child only makes system calls and execs (no allocation after fork but the
    // CStrings made before it).
    match unsafe { fork() }.map_err(err("fork"))? {
        ForkResult::Child => {
            let ok = (|| -> nix::Result<()> {
                unshare(CloneFlags::CLONE_NEWNS)?;
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )?;
                mount(
                    Some("tmpfs"),
                    "/dev",
                    Some("tmpfs"),
                    MsFlags::empty(),
                    Some("mode=755"),
                )?;
                for (path, rdev) in &made {
                    mknod(
                        path.as_str(),
                        SFlag::S_IFCHR,
                        Mode::from_bits_truncate(0o666),
                        *rdev,
                    )?;
                }
                nix::unistd::dup2_stdout(&write_end)?;
                Ok(())
            })();
            if ok.is_ok() {
                let _ = execv(&smi, &[smi.clone(), c"-L".to_owned()]);
            }
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { nix::libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut out = Vec::new();
            let mut file = std::fs::File::from(read_end);
            std::io::Read::read_to_end(&mut file, &mut out).map_err(err("read"))?;
            let status = waitpid(child, None).map_err(err("waitpid"))?;
            check(matches!(status, WaitStatus::Exited(_, 0)), || {
                format!("emuv-smi in the namespace: {status:?}")
            })?;
            Ok(String::from_utf8_lossy(&out)
                .lines()
                .map(String::from)
                .collect())
        }
    }
}

fn one_card_inside() -> TestResult {
    let spec = spec()?;
    let host = smi_uuids(&String::from_utf8_lossy(&run("emuv-smi", &["-L"])?.stdout));
    let lines = inside_container(&spec, "3")?;
    let inside = smi_uuids(&lines.join("\n"));
    check_eq(
        "what emuv-smi sees given device 3",
        inside,
        vec![host[3].clone()],
    )?;
    check(
        lines.first().is_some_and(|l| l.starts_with("GPU 0: ")),
        || format!("not index 0: {lines:?}"),
    )?;
    let by_uuid = inside_container(&spec, &host[1])?;
    check_eq(
        "given card 1 by UUID",
        smi_uuids(&by_uuid.join("\n")),
        vec![host[1].clone()],
    )?;
    let all = inside_container(&spec, "all")?;
    check_eq("given all", smi_uuids(&all.join("\n")), host)
}

fn bad_kind_refused() -> TestResult {
    let out = run("emuv-ctk", &["cdi", "generate", "--kind", "gpu"])?;
    check_eq("exit code of --kind gpu", out.status.code(), Some(2))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    check(stderr.contains("vendor.tld/class"), || {
        format!("stderr: {stderr}")
    })?;
    check(out.stdout.is_empty(), || "a spec was written anyway".into())
}

fn main() {
    let mut tap = Tap::new(3);
    tap.test(
        "CDI spec: a device per card by index and UUID, and all, with the cards' nodes",
        module::with_loaded(FOUR_CARDS, names_nodes_and_uuids),
    );
    tap.test(
        "the spec's edits applied as a runtime does: emuv-smi sees exactly the device given",
        module::with_loaded(FOUR_CARDS, one_card_inside),
    );
    tap.test(
        "an invalid CDI kind is refused, nothing written",
        bad_kind_refused(),
    );
    tap.finish()
}
