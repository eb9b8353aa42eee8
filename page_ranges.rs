// SPDX-License-Identifier: GPL-2.0

//! Which pages of an eager tier are taken, and which freed pages are quarantined.
//!
//! A page of emulated VRAM can outlive its allocation elsewhere in the kernel: `vmsplice()`
//! leaves a reference to it in a pipe, io_uring pins registered buffers, direct I/O pins pages
//! for the I/O. Such a page must never be handed to another allocation, or its next owner's
//! data would be read (or overwritten) through the old reference. So a freed page that is still
//! held elsewhere stays taken, in quarantine, and is zeroed and handed out again only once the
//! last outside reference is gone, which [`PageRanges::release_quarantine`] checks.
//!
//! Two bitmaps of one bit per page, allocated at load: freeing never allocates, so it cannot
//! fail, and every page is always in exactly one state: free, taken, or quarantined (taken
//! and quarantined).

use kernel::{alloc::KVVec, prelude::*};

const WORD_BITS: usize = usize::BITS as usize;

/// A fixed-size bitmap.
struct Bits {
    words: KVVec<usize>,
    len: usize,
}

impl Bits {
    fn new(len: usize) -> Result<Self> {
        Ok(Self {
            words: KVVec::from_elem(0, len.div_ceil(WORD_BITS), GFP_KERNEL)?,
            len,
        })
    }

    fn get(&self, bit: usize) -> bool {
        self.words
            .get(bit / WORD_BITS)
            .is_some_and(|w| w & (1 << (bit % WORD_BITS)) != 0)
    }

    /// Sets (`value`) or clears bits `start..end`, a word at a time where it can.
    fn assign(&mut self, start: usize, end: usize, value: bool) {
        let end = end.min(self.len);
        let mut bit = start;
        while bit < end {
            let offset = bit % WORD_BITS;
            let n = (WORD_BITS - offset).min(end - bit);
            let mask = if n == WORD_BITS {
                !0
            } else {
                ((1usize << n) - 1) << offset
            };
            if let Some(word) = self.words.get_mut(bit / WORD_BITS) {
                if value {
                    *word |= mask;
                } else {
                    *word &= !mask;
                }
            }
            bit += n;
        }
    }

    /// The first bit from `start` on that is `value`.
    fn next(&self, start: usize, value: bool) -> Option<usize> {
        let mut bit = start;
        while bit < self.len {
            let index = bit / WORD_BITS;
            let word = self.words.get(index).copied().unwrap_or(0);
            let word = if value { word } else { !word };
            let masked = word & (!0usize << (bit % WORD_BITS));
            if masked != 0 {
                let found = index * WORD_BITS + masked.trailing_zeros() as usize;
                return (found < self.len).then_some(found);
            }
            bit = (index + 1) * WORD_BITS;
        }
        None
    }
}

/// What a tier's pages are doing.
pub(crate) struct PageRanges {
    /// Set: handed to an allocation, or quarantined.
    taken: Bits,
    /// Set: freed, but still held elsewhere.
    quarantined: Bits,
    quarantined_pages: usize,
}

impl PageRanges {
    /// Pages `0..pages`, all free.
    pub(crate) fn new(pages: usize) -> Result<Self> {
        Ok(Self {
            taken: Bits::new(pages)?,
            quarantined: Bits::new(pages)?,
            quarantined_pages: 0,
        })
    }

    /// Takes the first free run of `count` pages, or `ENOMEM` when there is none.
    pub(crate) fn alloc(&mut self, count: usize) -> Result<usize> {
        if count == 0 {
            return Err(EINVAL);
        }
        let mut start = 0;
        while let Some(first) = self.taken.next(start, false) {
            let end = self.taken.next(first, true).unwrap_or(self.taken.len);
            if end - first >= count {
                self.taken.assign(first, first + count, true);
                return Ok(first);
            }
            start = end;
        }
        Err(ENOMEM)
    }

    /// Gives back page `page` of a freed range; the caller zeroed it first.
    fn free_page(&mut self, page: usize) {
        self.taken.assign(page, page + 1, false);
    }

    /// Gives back the pages of `first..first + count` that are not quarantined; the caller
    /// zeroed them first.
    pub(crate) fn free_unquarantined(&mut self, first: usize, count: usize) {
        for page in first..first.saturating_add(count) {
            if !self.quarantined.get(page) {
                self.free_page(page);
            }
        }
    }

    /// Keeps page `page` of a freed range out of use: something else still holds it.
    pub(crate) fn quarantine(&mut self, page: usize) {
        if !self.quarantined.get(page) {
            self.quarantined.assign(page, page + 1, true);
            self.quarantined_pages += 1;
        }
    }

    /// Pages in quarantine now.
    pub(crate) fn quarantined_pages(&self) -> usize {
        self.quarantined_pages
    }

    /// Frees every quarantined page that `still_held` says nothing holds any more, after
    /// `zero` cleaned it. Returns how many pages left quarantine.
    pub(crate) fn release_quarantine(
        &mut self,
        still_held: impl Fn(usize) -> bool,
        zero: impl Fn(usize),
    ) -> usize {
        let mut released = 0;
        let mut start = 0;
        while self.quarantined_pages > 0 {
            let Some(page) = self.quarantined.next(start, true) else {
                break;
            };
            start = page + 1;
            if still_held(page) {
                continue;
            }
            zero(page);
            self.quarantined.assign(page, page + 1, false);
            self.quarantined_pages -= 1;
            self.free_page(page);
            released += 1;
        }
        released
    }
}

#[cfg(emuv_kunit)]
#[kunit_tests(emuv_page_ranges)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_across_words_and_holes() -> Result {
        let mut ranges = PageRanges::new(200)?;
        assert_eq!(ranges.alloc(70)?, 0);
        assert_eq!(ranges.alloc(70)?, 70);
        assert_eq!(ranges.alloc(61).err(), Some(ENOMEM));
        assert_eq!(ranges.alloc(60)?, 140);
        assert_eq!(ranges.alloc(1).err(), Some(ENOMEM));
        ranges.free_unquarantined(70, 70);
        // A 70-page hole: 71 does not fit, 64 does, then 6 more, then nothing.
        assert_eq!(ranges.alloc(71).err(), Some(ENOMEM));
        assert_eq!(ranges.alloc(64)?, 70);
        assert_eq!(ranges.alloc(6)?, 134);
        assert_eq!(ranges.alloc(1).err(), Some(ENOMEM));
        assert_eq!(ranges.alloc(0).err(), Some(EINVAL));
        Ok(())
    }

    #[test]
    fn quarantined_pages_stay_taken_until_released() -> Result {
        let mut ranges = PageRanges::new(8)?;
        assert_eq!(ranges.alloc(8)?, 0);
        // Page 3 is still held elsewhere; the others are freed.
        ranges.quarantine(3);
        ranges.quarantine(3);
        ranges.free_unquarantined(0, 8);
        assert_eq!(ranges.quarantined_pages(), 1);
        // Only runs that avoid page 3 can be had.
        assert_eq!(ranges.alloc(4)?, 4);
        assert_eq!(ranges.alloc(4).err(), Some(ENOMEM));
        assert_eq!(ranges.alloc(3)?, 0);
        assert_eq!(ranges.alloc(1).err(), Some(ENOMEM));
        // Still held: stays.
        assert_eq!(ranges.release_quarantine(|_| true, |_| ()), 0);
        assert_eq!(ranges.quarantined_pages(), 1);
        // Let go: zeroed once, then free.
        let zeroed = core::cell::Cell::new(0);
        assert_eq!(
            ranges.release_quarantine(|_| false, |p| zeroed.set(zeroed.get() + 1 + p)),
            1
        );
        assert_eq!(zeroed.get(), 4);
        assert_eq!(ranges.quarantined_pages(), 0);
        assert_eq!(ranges.alloc(1)?, 3);
        Ok(())
    }
}
