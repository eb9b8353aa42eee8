// SPDX-License-Identifier: GPL-2.0
//! TAP 13 as kselftest prints it (`tools/testing/selftests/kselftest.h`).

use std::fmt::Display;

/// kselftest's exit codes.
pub const KSFT_PASS: i32 = 0;
pub const KSFT_FAIL: i32 = 1;
pub const KSFT_SKIP: i32 = 4;

/// One test program's results.
pub struct Tap {
    planned: usize,
    run: usize,
    pass: usize,
    fail: usize,
    skip: usize,
}

impl Tap {
    /// Prints the header and the plan.
    pub fn new(planned: usize) -> Self {
        println!("TAP version 13");
        println!("1..{planned}");
        Tap {
            planned,
            run: 0,
            pass: 0,
            fail: 0,
            skip: 0,
        }
    }

    /// Records one test: `ok N name` or `not ok N name`, with `diag` as a `#` line on failure.
    pub fn test(&mut self, name: &str, result: Result<(), impl Display>) -> bool {
        self.run += 1;
        match result {
            Ok(()) => {
                self.pass += 1;
                println!("ok {} {name}", self.run);
                true
            }
            Err(why) => {
                self.fail += 1;
                for line in why.to_string().lines() {
                    println!("# {line}");
                }
                println!("not ok {} {name}", self.run);
                false
            }
        }
    }

    /// `ok N name # SKIP reason`.
    pub fn skip(&mut self, name: &str, reason: &str) {
        self.run += 1;
        self.skip += 1;
        println!("ok {} {name} # SKIP {reason}", self.run);
    }

    /// A `# ` diagnostic line.
    pub fn note(&self, msg: impl Display) {
        println!("# {msg}");
    }

    /// Prints the totals and exits with kselftest's code.
    pub fn finish(self) -> ! {
        if self.run != self.planned {
            println!(
                "# Planned tests != run tests ({} != {})",
                self.planned, self.run
            );
        }
        println!(
            "# Totals: pass:{} fail:{} xfail:0 xpass:0 skip:{} error:0",
            self.pass, self.fail, self.skip
        );
        let code = if self.fail > 0 || self.run != self.planned {
            KSFT_FAIL
        } else if self.skip > 0 && self.pass == 0 {
            KSFT_SKIP
        } else {
            KSFT_PASS
        };
        std::process::exit(code)
    }
}

/// `Err(message)` unless `cond`.
pub fn check(cond: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(message())
    }
}

/// `Err` naming both values unless `actual == expected`.
pub fn check_eq<T: PartialEq + std::fmt::Debug>(
    what: &str,
    actual: T,
    expected: T,
) -> Result<(), String> {
    check(actual == expected, || {
        format!("{what}: got {actual:?}, expected {expected:?}")
    })
}
