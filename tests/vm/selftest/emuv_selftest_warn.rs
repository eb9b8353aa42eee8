// SPDX-License-Identifier: GPL-2.0

//! Runner self-test: loading this module triggers a real `WARN_ON`, which the VM runner must
//! turn into a failed run.

use kernel::prelude::*;

module! {
    type: WarnOnLoad,
    name: "emuv_selftest_warn",
    authors: ["emuv developers"],
    description: "Triggers a WARN_ON at load, to prove the test runner catches it",
    license: "GPL",
}

struct WarnOnLoad;

impl kernel::Module for WarnOnLoad {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        kernel::warn_on!(true);
        Ok(Self)
    }
}
