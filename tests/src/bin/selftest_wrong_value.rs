// SPDX-License-Identifier: GPL-2.0
//! Runner self-test: asserts a wrong value on purpose (emuv's default card is an RTX 4070, not
//! a 4090), so `make check-runner` can prove that a failing assertion fails the run.

use emuv_tests::{
    attr, module,
    tap::{check_eq, Tap},
};

fn main() {
    let mut tap = Tap::new(1);
    let result = module::with_loaded("", || {
        check_eq(
            "gpu_name",
            attr("gpu_name").map_err(|e| e.to_string())?.as_str(),
            "NVIDIA GeForce RTX 4090",
        )
    });
    tap.test("default card is an RTX 4090 (deliberately wrong)", result);
    tap.finish()
}
