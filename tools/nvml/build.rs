// SPDX-License-Identifier: GPL-2.0
//! The soname programs link against and dlopen: NVIDIA's.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnvidia-ml.so.1");
}
