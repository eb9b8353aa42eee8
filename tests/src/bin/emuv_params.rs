// SPDX-License-Identifier: GPL-2.0
//! Bad module parameters: `insmod` fails with `EINVAL`, `dmesg` gets one line naming the
//! parameter, the bad value and what is accepted, and nothing stays loaded.

use emuv_tests::{
    kmsg::Kmsg,
    module,
    tap::{check, check_eq, Tap},
};
use nix::errno::Errno;

/// (parameters, the parameter and value the error line must name)
const BAD: &[(&str, &str)] = &[
    ("gpu_model=4075", "gpu_model=4075"),
    ("gpu_model=banana", "gpu_model=banana"),
    ("gpu_model=", "gpu_model="),
    ("physical_vram_gb=abc", "physical_vram_gb=abc"),
    ("physical_vram_gb=-1", "physical_vram_gb=-1"),
    ("physical_vram_gb=", "physical_vram_gb="),
    ("physical_vram_gb=0", "physical_vram_gb=0"),
    ("physical_vram_mb=0", "physical_vram_mb=0"),
    ("physical_vram_gb=1025", "physical_vram_gb=1025"),
    ("virtual_vram_gb=2048", "virtual_vram_gb=2048"),
    ("virtual_vram_mb=1048577", "virtual_vram_mb=1048577"),
    (
        "physical_vram_gb=12 physical_vram_mb=512",
        "physical_vram_mb=512",
    ),
    ("virtual_vram_mb=64 virtual_vram_gb=1", "virtual_vram_gb=1"),
    ("lazy_allocation=maybe", "lazy_allocation=maybe"),
    ("debug_mode=2", "debug_mode=2"),
    ("vram_limit_per_file_mb=lots", "vram_limit_per_file_mb=lots"),
    (
        "vram_limit_per_file_mb=2097153",
        "vram_limit_per_file_mb=2097153",
    ),
    ("vram_limit_per_user_mb=x", "vram_limit_per_user_mb=x"),
    (
        "vram_limit_per_user_mb=2097153",
        "vram_limit_per_user_mb=2097153",
    ),
    ("max_allocations_per_file=0", "max_allocations_per_file=0"),
    (
        "max_allocations_per_file=16777217",
        "max_allocations_per_file=16777217",
    ),
];

fn main() {
    let mut tap = Tap::new(BAD.len() + 2);
    if module::is_loaded() {
        let _ = module::unload();
    }
    for (params, named) in BAD {
        let mut kmsg = Kmsg::new();
        let loaded = module::load(params);
        if loaded.is_ok() {
            let _ = module::unload();
        }
        let log = kmsg.read_new();
        let errors: Vec<_> = log
            .iter()
            .filter(|l| l.starts_with("emuv: invalid"))
            .collect();
        let result = check_eq("insmod result", loaded, Err(Errno::EINVAL))
            .and_then(|()| check_eq("error lines", errors.len(), 1))
            .and_then(|()| {
                let line = errors[0];
                check(
                    line.contains(&format!("invalid {named}:")) && line.contains("accepted"),
                    || format!("error line does not name '{named}' and what is accepted: {line}"),
                )
            })
            .and_then(|()| {
                check(!module::is_loaded(), || {
                    "module loaded after a failed insmod".into()
                })
            });
        tap.test(
            &format!("insmod emuv.ko {params} fails with EINVAL"),
            result,
        );
    }

    // The accepted spellings of every variant: case, an RTX prefix, separators, suffixes.
    let spellings = [
        ("4070", "0x2786"),
        ("RTX4070Ti", "0x2782"),
        ("4070-super", "0x2783"),
        ("4070tisuper", "0x2705"),
        ("4070_TI_SUPER", "0x2705"),
        ("4060ti", "0x2803"),
        ("4060ti16", "0x2805"),
        ("4060Ti16GB", "0x2805"),
        ("5060ti16", "0x2d04"),
        ("5090", "0x2b85"),
        ("4080S", "0x2702"),
    ];
    let result = spellings.iter().try_for_each(|(spelling, id)| {
        module::with_loaded(&format!("gpu_model={spelling} physical_vram_mb=64"), || {
            check_eq(
                spelling,
                emuv_tests::attr("device_id")
                    .map_err(|e| e.to_string())?
                    .as_str(),
                id,
            )
        })
    });
    tap.test("model spellings users guess are accepted", result);

    // A bare boolean, as for the kernel's own bool parameters, means yes.
    let result = module::with_loaded(
        "physical_vram_mb=64 lazy_allocation=0 lazy_allocation debug_mode",
        || {
            check_eq(
                "lazy_allocation",
                emuv_tests::param("lazy_allocation").map_err(|e| e.to_string())?,
                "1".to_owned(),
            )?;
            check_eq(
                "debug_mode",
                emuv_tests::param("debug_mode").map_err(|e| e.to_string())?,
                "1".to_owned(),
            )
        },
    );
    tap.test("a bare boolean parameter means yes", result);
    tap.finish()
}
