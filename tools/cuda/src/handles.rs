// SPDX-License-Identifier: GPL-2.0
//! Handles (`CUcontext`, `CUstream`, `CUevent`, `CUmodule`...) as programs see them: numbers
//! that are never dereferenced. A program can pass any value, a stale one or one of another
//! kind; each is looked up in its registry and answers the API's error if it is not there.
//! Numbers are never reused, so a stale handle cannot name a newer object.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

/// Shared by every kind, so that no two live objects of any kinds have the same number.
static NEXT: AtomicUsize = AtomicUsize::new(0x5000_0000);

/// A fresh handle number: 16-byte steps, like the addresses a real driver hands out.
pub fn fresh() -> usize {
    NEXT.fetch_add(0x10, Ordering::Relaxed)
}

/// The live objects of one kind, by handle.
pub struct Registry<T> {
    live: Mutex<Option<HashMap<usize, Arc<T>>>>,
}

impl<T> Registry<T> {
    pub const fn new() -> Self {
        Registry {
            live: Mutex::new(None),
        }
    }

    fn map(&self) -> MutexGuardMap<'_, T> {
        MutexGuardMap(self.live.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Registers `object` under a fresh handle.
    pub fn insert(&self, make: impl FnOnce(usize) -> T) -> (usize, Arc<T>) {
        let handle = fresh();
        let object = Arc::new(make(handle));
        self.map().get().insert(handle, object.clone());
        (handle, object)
    }

    /// Registers `object` under a handle taken earlier with [`fresh`] (a primary context
    /// keeps its handle across its lives).
    pub fn insert_as(&self, handle: usize, object: T) -> Arc<T> {
        let object = Arc::new(object);
        self.map().get().insert(handle, object.clone());
        object
    }

    pub fn get(&self, handle: usize) -> Option<Arc<T>> {
        self.map().get().get(&handle).cloned()
    }

    pub fn remove(&self, handle: usize) -> Option<Arc<T>> {
        self.map().get().remove(&handle)
    }

    /// Every live object for which `keep` holds.
    pub fn filter(&self, keep: impl Fn(&T) -> bool) -> Vec<Arc<T>> {
        self.map()
            .get()
            .values()
            .filter(|o| keep(o))
            .cloned()
            .collect()
    }

    /// Removes and returns every object for which `take` holds.
    pub fn drain(&self, take: impl Fn(&T) -> bool) -> Vec<Arc<T>> {
        let mut map = self.map();
        let map = map.get();
        let keys: Vec<usize> = map
            .iter()
            .filter(|(_, o)| take(o))
            .map(|(&k, _)| k)
            .collect();
        keys.into_iter().filter_map(|k| map.remove(&k)).collect()
    }
}

struct MutexGuardMap<'a, T>(MutexGuard<'a, Option<HashMap<usize, Arc<T>>>>);

impl<T> MutexGuardMap<'_, T> {
    fn get(&mut self) -> &mut HashMap<usize, Arc<T>> {
        self.0.get_or_insert_with(HashMap::new)
    }
}
