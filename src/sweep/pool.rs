//! Running independent jobs on a few threads: sweep points, capacity candidates.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Calls `f(index, item)` for every item from up to `jobs` threads, handing items out in
/// order. After the first error no further items are started; that error is returned.
pub fn for_each<T: Sync, E: Send>(
    items: &[T],
    jobs: usize,
    f: impl Fn(usize, &T) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<E>> = Mutex::new(None);
    let failed = || failure.lock().map_or(true, |f| f.is_some());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(items.len().max(1)) {
            scope.spawn(|| {
                while !failed() {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { return };
                    if let Err(e) = f(i, item) {
                        if let Ok(mut slot) = failure.lock() {
                            slot.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    match failure.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

/// `f(index, item)` for every item from up to `jobs` threads, as [`for_each`]; the results
/// in the items' order, whichever thread made them.
pub fn map<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    f: impl Fn(usize, &T) -> R + Sync,
) -> Vec<R> {
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    // Nothing fails; a panic in `f` is passed on by the scope, poisoning no result kept.
    let _ = for_each(items, jobs, |i, item| {
        let r = f(i, item);
        if let Ok(mut slot) = slots[i].lock() {
            *slot = Some(r);
        }
        Ok::<(), ()>(())
    });
    slots
        .into_iter()
        .filter_map(|s| s.into_inner().ok().flatten())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_keeps_the_items_order() {
        let items: Vec<u64> = (0..200).collect();
        let squares = map(&items, 3, |i, x| {
            // Uneven work, so that threads finish out of order.
            std::thread::sleep(std::time::Duration::from_micros((x % 7) * 50));
            (i, x * x)
        });
        assert_eq!(
            squares,
            (0..200).map(|x| (x as usize, x * x)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn every_item_once_and_errors_stop_the_rest() {
        let seen = Mutex::new(Vec::new());
        for_each(&[1, 2, 3, 4, 5], 3, |i, x| {
            seen.lock().unwrap().push((i, *x));
            Ok::<(), ()>(())
        })
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort_unstable();
        assert_eq!(seen, vec![(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]);
        let ran = AtomicUsize::new(0);
        let r = for_each(&[0; 100], 1, |i, _| {
            ran.fetch_add(1, Ordering::Relaxed);
            if i == 3 { Err(i) } else { Ok(()) }
        });
        assert_eq!(r, Err(3));
        assert_eq!(ran.into_inner(), 4, "nothing starts after the error");
    }
}
