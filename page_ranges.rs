// SPDX-License-Identifier: GPL-2.0

//! The state of every page of an eager tier, and the only transitions between states.
//!
//! A page of emulated VRAM can outlive its allocation elsewhere in the kernel: `vmsplice()`
//! leaves a reference to it in a pipe, io_uring pins registered buffers, direct I/O pins pages
//! for the I/O. Such a page must never be handed to another allocation, or its next owner's
//! data would be read (or overwritten) through the old reference. And a freed page must be
//! zeroed before anyone else gets it, which the scrubber does in the background.
//!
//! Each page is in exactly one [`PageState`], stored as two bits per page: one value, so a page
//! cannot be in two states at once, and the counts per state always add up to the tier. The
//! transitions (docs/design.md, "Eager pages"):
//!
//! * `Free -> Taken`: [`PageRanges::alloc`].
//! * `Taken -> Scrubbing`: [`PageRanges::free`], the whole range at once; it fails and changes
//!   nothing unless every page of the range is `Taken`.
//! * `Scrubbing -> Free | Quarantined`: [`PageRanges::finish_scrub`], for the run of `Scrubbing`
//!   pages that one [`PageRanges::claim_scrub`] gave one scrubber to zero outside the lock.
//! * `Quarantined -> Scrubbing`: [`PageRanges::release_quarantine`], once nothing else holds it.
//!
//! The caller holds one lock around all of them (the pool's). Only claimed pages are touched
//! outside it, and only by their claimer: no other transition applies to a claimed page.
//!
//! Allocated at load and never grown: freeing never allocates, so it cannot fail for want of
//! memory.

use kernel::{alloc::KVVec, prelude::*};

/// What a page is doing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum PageState {
    /// Zeroed, in no allocation: ALLOC may take it.
    Free = 0,
    /// In one allocation.
    Taken = 1,
    /// Freed, but still held elsewhere (a pipe, io_uring, direct I/O): kept out of use.
    Quarantined = 2,
    /// Freed, waiting to be zeroed (or being zeroed by the holder of the claim).
    Scrubbing = 3,
}

impl PageState {
    #[cfg(emuv_kunit)]
    fn from_bits(bits: u64) -> Self {
        match bits & 3 {
            0 => PageState::Free,
            1 => PageState::Taken,
            2 => PageState::Quarantined,
            _ => PageState::Scrubbing,
        }
    }

    /// A word of 32 pages all in this state.
    const fn word(self) -> u64 {
        LOW * self as u64
    }
}

/// Pages per word of the state array.
const PER_WORD: usize = 32;
/// The low bit of every page's two.
const LOW: u64 = 0x5555_5555_5555_5555;

/// The low bit of each page's two set where the page of `word` is in `state`.
fn matching(word: u64, state: PageState) -> u64 {
    let lo = word & LOW;
    let hi = (word >> 1) & LOW;
    let lo = if state as u8 & 1 != 0 { lo } else { !lo & LOW };
    let hi = if state as u8 & 2 != 0 { hi } else { !hi & LOW };
    lo & hi
}

/// Most pages one scrub claim covers: 2 MiB, so a waiting ALLOC waits for little.
pub(crate) const CLAIM_PAGES: usize = 512;

/// Pages of a claim that were still held elsewhere when zeroing came to them, one bit each.
pub(crate) type HeldPages = [u64; CLAIM_PAGES / 64];

/// A run of `Scrubbing` pages given to one scrubber to zero outside the lock.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Claim {
    pub(crate) first: usize,
    pub(crate) count: usize,
}

/// The pages of one tier.
pub(crate) struct PageRanges {
    words: KVVec<u64>,
    pages: usize,
    /// Pages per state, indexed by the state's value.
    counts: [usize; 4],
    /// The one claim out, if any: its pages stay `Scrubbing` until it is finished.
    claim: Option<Claim>,
    /// Where the next claim is looked for, so scrubbing goes round the tier.
    cursor: usize,
}

impl PageRanges {
    /// Pages `0..pages`, all free.
    pub(crate) fn new(pages: usize) -> Result<Self> {
        let mut counts = [0; 4];
        counts[PageState::Free as usize] = pages;
        Ok(Self {
            words: KVVec::from_elem(0, pages.div_ceil(PER_WORD), GFP_KERNEL)?,
            pages,
            counts,
            claim: None,
            cursor: 0,
        })
    }

    /// Pages in `state` now.
    pub(crate) fn count(&self, state: PageState) -> usize {
        self.counts[state as usize]
    }

    /// The state of `page`, `None` past the end. For tests.
    #[cfg(emuv_kunit)]
    pub(crate) fn state(&self, page: usize) -> Option<PageState> {
        if page >= self.pages {
            return None;
        }
        let word = self.words.get(page / PER_WORD)?;
        Some(PageState::from_bits(word >> (2 * (page % PER_WORD))))
    }

    /// The first page from `start` on whose state `select` picks (it gets a word and returns
    /// the low bits of the pages it picks).
    fn next(&self, start: usize, select: impl Fn(u64) -> u64) -> Option<usize> {
        let mut page = start;
        while page < self.pages {
            let index = page / PER_WORD;
            let word = self.words.get(index).copied().unwrap_or(0);
            let picked = select(word) & (LOW << (2 * (page % PER_WORD)));
            if picked != 0 {
                let found = index * PER_WORD + picked.trailing_zeros() as usize / 2;
                return (found < self.pages).then_some(found);
            }
            page = (index + 1) * PER_WORD;
        }
        None
    }

    /// Whether every page of `first..end` is in `state`.
    fn all_in(&self, first: usize, end: usize, state: PageState) -> bool {
        let mut page = first;
        while page < end {
            let offset = page % PER_WORD;
            let n = (PER_WORD - offset).min(end - page);
            let Some(&word) = self.words.get(page / PER_WORD) else {
                return false;
            };
            let mask = if n == PER_WORD {
                !0
            } else {
                ((1u64 << (2 * n)) - 1) << (2 * offset)
            };
            if (word ^ state.word()) & mask != 0 {
                return false;
            }
            page += n;
        }
        true
    }

    /// Puts `first..end` into `to`, a word at a time where it can; every page of it was in
    /// `from` (checked by the caller), and the counts follow.
    fn set(&mut self, first: usize, end: usize, from: PageState, to: PageState) {
        let mut page = first;
        while page < end {
            let offset = page % PER_WORD;
            let n = (PER_WORD - offset).min(end - page);
            let mask = if n == PER_WORD {
                !0
            } else {
                ((1u64 << (2 * n)) - 1) << (2 * offset)
            };
            if let Some(word) = self.words.get_mut(page / PER_WORD) {
                *word = (*word & !mask) | (to.word() & mask);
            }
            page += n;
        }
        let n = end - first;
        self.counts[from as usize] = self.counts[from as usize].saturating_sub(n);
        self.counts[to as usize] = self.counts[to as usize].saturating_add(n);
    }

    /// `first..first + count` if it lies inside the tier and every page of it is in `state`.
    fn range_in(&self, first: usize, count: usize, state: PageState) -> Result<usize> {
        let end = first.checked_add(count).ok_or(EINVAL)?;
        if count == 0 || end > self.pages || !self.all_in(first, end, state) {
            return Err(EINVAL);
        }
        Ok(end)
    }

    /// `Free -> Taken` for the first free run of `count` pages; `ENOMEM` when there is none.
    pub(crate) fn alloc(&mut self, count: usize) -> Result<usize> {
        if count == 0 {
            return Err(EINVAL);
        }
        if self.count(PageState::Free) < count {
            return Err(ENOMEM);
        }
        let mut start = 0;
        while let Some(first) = self.next(start, |w| matching(w, PageState::Free)) {
            let end = self
                .next(first, |w| !matching(w, PageState::Free) & LOW)
                .unwrap_or(self.pages);
            if end - first >= count {
                self.set(first, first + count, PageState::Free, PageState::Taken);
                return Ok(first);
            }
            start = end;
        }
        Err(ENOMEM)
    }

    /// `Taken -> Scrubbing` for a freed allocation's `first..first + count`. `EINVAL`, and
    /// nothing changes, unless every page of it is `Taken`: a range can be freed only once.
    pub(crate) fn free(&mut self, first: usize, count: usize) -> Result {
        let end = self.range_in(first, count, PageState::Taken)?;
        self.set(first, end, PageState::Taken, PageState::Scrubbing);
        Ok(())
    }

    /// Claims the next run of unclaimed `Scrubbing` pages (at most [`CLAIM_PAGES`]) for the
    /// caller to zero outside the lock; `None` when there is none, or another claim is out.
    pub(crate) fn claim_scrub(&mut self) -> Option<Claim> {
        if self.claim.is_some() || self.count(PageState::Scrubbing) == 0 {
            return None;
        }
        let scrubbing = |w| matching(w, PageState::Scrubbing);
        let first = self
            .next(self.cursor, scrubbing)
            .or_else(|| self.next(0, scrubbing))?;
        let limit = self.pages.min(first.saturating_add(CLAIM_PAGES));
        let end = self
            .next(first, |w| !matching(w, PageState::Scrubbing) & LOW)
            .map_or(limit, |end| end.min(limit));
        let claim = Claim {
            first,
            count: end - first,
        };
        self.claim = Some(claim);
        self.cursor = end;
        Some(claim)
    }

    /// Whether a claim is out.
    pub(crate) fn claimed(&self) -> bool {
        self.claim.is_some()
    }

    /// Ends `claim`, whose pages the claimer zeroed except those `held` marks (still held
    /// elsewhere, so not zeroed): `Scrubbing -> Free` for the zeroed ones, `-> Quarantined` for
    /// the held ones. Returns how many became free; `EINVAL` for a claim that is not out.
    pub(crate) fn finish_scrub(&mut self, claim: Claim, held: &HeldPages) -> Result<usize> {
        if self.claim != Some(claim) || claim.count > CLAIM_PAGES {
            return Err(EINVAL);
        }
        self.claim = None;
        let mut freed = 0;
        let mut run_start = claim.first;
        let end = claim.first + claim.count;
        // Runs of equal outcome, so whole words are set at once.
        while run_start < end {
            let is_held = |page: usize| {
                let i = page - claim.first;
                held[i / 64] & (1 << (i % 64)) != 0
            };
            let this_held = is_held(run_start);
            let mut run_end = run_start + 1;
            while run_end < end && is_held(run_end) == this_held {
                run_end += 1;
            }
            let to = if this_held {
                PageState::Quarantined
            } else {
                freed += run_end - run_start;
                PageState::Free
            };
            self.set(run_start, run_end, PageState::Scrubbing, to);
            run_start = run_end;
        }
        Ok(freed)
    }

    /// `Quarantined -> Scrubbing` for every quarantined page that `still_held` says nothing
    /// holds any more. Returns how many pages left quarantine.
    pub(crate) fn release_quarantine(&mut self, still_held: impl Fn(usize) -> bool) -> usize {
        let mut released = 0;
        let mut seen = 0;
        let mut start = 0;
        let quarantined = self.count(PageState::Quarantined);
        while seen < quarantined {
            let Some(page) = self.next(start, |w| matching(w, PageState::Quarantined)) else {
                break;
            };
            start = page + 1;
            seen += 1;
            if !still_held(page) {
                self.set(page, page + 1, PageState::Quarantined, PageState::Scrubbing);
                released += 1;
            }
        }
        released
    }

    /// Recounts every page: whether the counts are the states' and the claim covers only
    /// `Scrubbing` pages. For tests; linear in the tier.
    #[cfg(emuv_kunit)]
    pub(crate) fn consistent(&self) -> bool {
        let mut counts = [0usize; 4];
        for page in 0..self.pages {
            match self.state(page) {
                Some(state) => counts[state as usize] += 1,
                None => return false,
            }
        }
        let claim_ok = self.claim.is_none_or(|c| {
            c.count > 0
                && c.count <= CLAIM_PAGES
                && c.first + c.count <= self.pages
                && self.all_in(c.first, c.first + c.count, PageState::Scrubbing)
        });
        // Bits past the last page stay zero (`Free`) and are never counted.
        counts == self.counts && counts.iter().sum::<usize>() == self.pages && claim_ok
    }
}

#[cfg(emuv_kunit)]
#[kunit_tests(emuv_page_ranges)]
mod tests {
    use super::*;

    const NONE_HELD: HeldPages = [0; CLAIM_PAGES / 64];

    /// Claims and finishes scrubbing until no page is `Scrubbing`, none held.
    fn scrub_all(ranges: &mut PageRanges) -> Result {
        while let Some(claim) = ranges.claim_scrub() {
            ranges.finish_scrub(claim, &NONE_HELD)?;
        }
        assert_eq!(ranges.count(PageState::Scrubbing), 0);
        Ok(())
    }

    #[test]
    fn first_fit_across_words_and_holes() -> Result {
        let mut ranges = PageRanges::new(200)?;
        assert_eq!(ranges.alloc(70)?, 0);
        assert_eq!(ranges.alloc(70)?, 70);
        assert_eq!(ranges.alloc(61).err(), Some(ENOMEM));
        assert_eq!(ranges.alloc(60)?, 140);
        assert_eq!(ranges.alloc(1).err(), Some(ENOMEM));
        ranges.free(70, 70)?;
        // Freed pages are not free until scrubbed.
        assert_eq!(ranges.alloc(1).err(), Some(ENOMEM));
        scrub_all(&mut ranges)?;
        // A 70-page hole: 71 does not fit, 64 does, then 6 more, then nothing.
        assert_eq!(ranges.alloc(71).err(), Some(ENOMEM));
        assert_eq!(ranges.alloc(64)?, 70);
        assert_eq!(ranges.alloc(6)?, 134);
        assert_eq!(ranges.alloc(1).err(), Some(ENOMEM));
        assert_eq!(ranges.alloc(0).err(), Some(EINVAL));
        assert!(ranges.consistent());
        Ok(())
    }

    #[test]
    fn a_range_is_freed_once_and_only_whole() -> Result {
        let mut ranges = PageRanges::new(64)?;
        assert_eq!(ranges.alloc(8)?, 0);
        assert_eq!(ranges.alloc(8)?, 8);
        ranges.free(0, 8)?;
        // Again, overlapping the next allocation, past the end, empty: refused, nothing changed.
        assert_eq!(ranges.free(0, 8).err(), Some(EINVAL));
        assert_eq!(ranges.free(4, 8).err(), Some(EINVAL));
        assert_eq!(ranges.free(60, 8).err(), Some(EINVAL));
        assert_eq!(ranges.free(usize::MAX, 2).err(), Some(EINVAL));
        assert_eq!(ranges.free(8, 0).err(), Some(EINVAL));
        assert_eq!(ranges.count(PageState::Taken), 8);
        assert_eq!(ranges.count(PageState::Scrubbing), 8);
        // A claim out is finished only once, and only by its claim.
        let claim = ranges.claim_scrub().ok_or(EINVAL)?;
        assert_eq!(claim, Claim { first: 0, count: 8 });
        assert!(ranges.claim_scrub().is_none());
        let forged = Claim { first: 8, count: 8 };
        assert_eq!(ranges.finish_scrub(forged, &NONE_HELD).err(), Some(EINVAL));
        assert_eq!(ranges.finish_scrub(claim, &NONE_HELD)?, 8);
        assert_eq!(ranges.finish_scrub(claim, &NONE_HELD).err(), Some(EINVAL));
        assert_eq!(ranges.count(PageState::Free), 56);
        assert!(ranges.consistent());
        Ok(())
    }

    #[test]
    fn held_pages_are_quarantined_until_let_go() -> Result {
        let mut ranges = PageRanges::new(8)?;
        assert_eq!(ranges.alloc(8)?, 0);
        ranges.free(0, 8)?;
        // Page 3 is still held elsewhere when the scrubber comes to it.
        let claim = ranges.claim_scrub().ok_or(EINVAL)?;
        let mut held = NONE_HELD;
        held[0] = 1 << 3;
        assert_eq!(ranges.finish_scrub(claim, &held)?, 7);
        assert_eq!(ranges.count(PageState::Quarantined), 1);
        assert_eq!(ranges.state(3), Some(PageState::Quarantined));
        // Only runs that avoid page 3 can be had.
        assert_eq!(ranges.alloc(4)?, 4);
        assert_eq!(ranges.alloc(4).err(), Some(ENOMEM));
        assert_eq!(ranges.alloc(3)?, 0);
        assert_eq!(ranges.alloc(1).err(), Some(ENOMEM));
        // Still held: stays.
        assert_eq!(ranges.release_quarantine(|_| true), 0);
        assert_eq!(ranges.count(PageState::Quarantined), 1);
        // Let go: scrubbed like any freed page, and only then free.
        assert_eq!(ranges.release_quarantine(|_| false), 1);
        assert_eq!(ranges.state(3), Some(PageState::Scrubbing));
        assert_eq!(ranges.alloc(1).err(), Some(ENOMEM));
        scrub_all(&mut ranges)?;
        assert_eq!(ranges.alloc(1)?, 3);
        assert!(ranges.consistent());
        Ok(())
    }

    /// A small xorshift generator: the interleavings are random but the same every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n.max(1) as u64) as usize
        }
    }

    /// Random interleavings of every transition, as concurrent ALLOCs, FREEs, scrubbers and
    /// releases of held pages would make them: after every step each page is in exactly one
    /// state, the counts are the states', no page is in two live allocations, every page of a
    /// live allocation is `Taken`, and a page becomes free only through a finished scrub.
    #[test]
    fn random_interleavings_keep_every_page_in_one_state() -> Result {
        const PAGES: usize = 700;
        let mut ranges = PageRanges::new(PAGES)?;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Live allocations, and which pages something outside still holds.
        let mut live: KVec<(usize, usize)> = KVec::new();
        let mut held_elsewhere = KVec::from_elem(false, PAGES, GFP_KERNEL)?;
        let mut owner = KVec::from_elem(usize::MAX, PAGES, GFP_KERNEL)?;
        // The claim out, as its claimer sees it, and what it found held.
        let mut out: Option<(Claim, HeldPages)> = None;
        for step in 0..20_000usize {
            match rng.below(6) {
                0 | 1 => {
                    let count = 1 + rng.below(40);
                    if let Ok(first) = ranges.alloc(count) {
                        for page in first..first + count {
                            assert_eq!(owner[page], usize::MAX);
                            owner[page] = step;
                        }
                        live.push((first, count), GFP_KERNEL)?;
                    }
                }
                2 if !live.is_empty() => {
                    let (first, count) = live.remove(rng.below(live.len())).map_err(|_| EINVAL)?;
                    // Some pages of it were spliced into a pipe before the FREE.
                    for page in first..first + count {
                        owner[page] = usize::MAX;
                        if rng.below(8) == 0 {
                            held_elsewhere[page] = true;
                        }
                    }
                    ranges.free(first, count)?;
                    assert_eq!(ranges.free(first, count).err(), Some(EINVAL));
                }
                3 => match out.take() {
                    // The claimer comes back under the lock.
                    Some((claim, held)) => {
                        ranges.finish_scrub(claim, &held)?;
                    }
                    // A scrubber claims a run and checks each page outside the lock.
                    None => {
                        if let Some(claim) = ranges.claim_scrub() {
                            let mut held = NONE_HELD;
                            for i in 0..claim.count {
                                if held_elsewhere[claim.first + i] {
                                    held[i / 64] |= 1 << (i % 64);
                                }
                            }
                            out = Some((claim, held));
                        }
                    }
                },
                4 => {
                    // A pipe is drained: its page is let go (never taken again: no mapping).
                    let page = rng.below(PAGES);
                    held_elsewhere[page] = false;
                }
                _ => {
                    ranges.release_quarantine(|page| held_elsewhere[page]);
                }
            }
            // A page under a claim out is Scrubbing, whatever else ran meanwhile.
            if let Some((claim, _)) = &out {
                for page in claim.first..claim.first + claim.count {
                    assert_eq!(ranges.state(page), Some(PageState::Scrubbing));
                }
            }
            // Never handed out, nor free, while something else holds it.
            for (page, held) in held_elsewhere.iter().enumerate() {
                if *held {
                    let state = ranges.state(page);
                    assert!(
                        state == Some(PageState::Quarantined)
                            || state == Some(PageState::Scrubbing)
                    );
                }
            }
            for (first, count) in live.iter() {
                for page in *first..*first + *count {
                    assert_eq!(ranges.state(page), Some(PageState::Taken));
                }
            }
            let taken: usize = live.iter().map(|(_, count)| count).sum();
            assert_eq!(ranges.count(PageState::Taken), taken);
            if step % 97 == 0 {
                assert!(ranges.consistent());
            }
        }
        assert!(ranges.consistent());
        Ok(())
    }
}
