//! An SDK client built on first use. Building one costs a cold start about 0.1–0.3 ms (its code's first
//! run), and a request answered without the store (a refusal, a 404, a validation error) never needs it.

use std::sync::{Arc, OnceLock};

pub struct Lazy<C> {
    cell: Arc<OnceLock<C>>,
    make: Arc<dyn Fn() -> C + Send + Sync>,
}

impl<C> Clone for Lazy<C> {
    fn clone(&self) -> Self {
        Lazy {
            cell: self.cell.clone(),
            make: self.make.clone(),
        }
    }
}

impl<C> std::fmt::Debug for Lazy<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.cell.get().is_some() {
            "Lazy(built)"
        } else {
            "Lazy(not built)"
        })
    }
}

impl<C> Lazy<C> {
    /// Built by `make` on first use; the clones share it.
    pub fn new(make: impl Fn() -> C + Send + Sync + 'static) -> Self {
        Lazy {
            cell: Arc::new(OnceLock::new()),
            make: Arc::new(make),
        }
    }

    pub fn get(&self) -> &C {
        self.cell.get_or_init(|| (self.make)())
    }
}

/// A client built already (tests wrap theirs in interceptors).
impl<C: Clone + Send + Sync + 'static> From<C> for Lazy<C> {
    fn from(client: C) -> Self {
        let cell = Arc::new(OnceLock::new());
        let _ = cell.set(client.clone());
        Lazy {
            cell,
            make: Arc::new(move || client.clone()),
        }
    }
}

/// The stores call the client as if it were built: the first call builds it.
impl<C> std::ops::Deref for Lazy<C> {
    type Target = C;

    fn deref(&self) -> &C {
        self.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_lazy_client_is_built_once_on_first_use_and_shared_by_its_clones() {
        let built = Arc::new(AtomicUsize::new(0));
        let counter = built.clone();
        let lazy = Lazy::new(move || counter.fetch_add(1, Ordering::SeqCst) + 100);
        let clone = lazy.clone();
        assert_eq!(built.load(Ordering::SeqCst), 0, "nothing built before use");
        assert_eq!(*clone.get(), 100);
        assert_eq!(*lazy, 100);
        assert_eq!(built.load(Ordering::SeqCst), 1);
        let ready: Lazy<u8> = 7.into();
        assert_eq!(*ready, 7);
    }
}
