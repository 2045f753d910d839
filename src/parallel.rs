//! Owns: running pure work over a slice on every core, results in the
//! slice's order (verification reads, parses and checks thousands of small
//! independent items; a local lookaside is read the same way). Must not do I/O of its own or decide what runs.

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Splits `items` into one contiguous part per core, runs `f` on each part
/// on its own thread and concatenates the results in order.
pub fn map_parts<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> Vec<R> + Sync) -> Vec<R> {
    let threads = cores().min(items.len().max(1));
    if threads <= 1 {
        return f(items);
    }
    let part = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(part)
            .map(|chunk| {
                let f = &f;
                scope.spawn(move || f(chunk))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a worker thread panicked"))
            .collect()
    })
}

/// Maps `f` over `items` on every core, keeping order.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    map_parts(items, |part| part.iter().map(&f).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_kept_whatever_the_parts() {
        let items: Vec<u32> = (0..1001).collect();
        assert_eq!(
            map(&items, |n| n * 2),
            items.iter().map(|n| n * 2).collect::<Vec<_>>()
        );
        let sums = map_parts(&items, |part| vec![part.iter().sum::<u32>()]);
        assert_eq!(sums.iter().sum::<u32>(), items.iter().sum::<u32>());
        assert!(sums.len() <= cores());
        assert!(map(&[] as &[u32], |n| *n).is_empty());
    }
}
