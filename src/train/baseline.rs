//! N-gram baselines of next-token loss, fitted on the training rows and evaluated on the held-out
//! rows (targets: every token after a row's first, predecessors within the same row), so a trained
//! model's held-out loss has two floors to beat.

use std::collections::HashMap;

/// (previous, next) pairs of rows of `ctx` tokens.
fn pairs(rows: &[u32], ctx: usize) -> impl Iterator<Item = (u32, u32)> + '_ {
    rows.chunks(ctx).flat_map(|r| r.windows(2).map(|w| (w[0], w[1])))
}

/// Add-one smoothed unigram probabilities of the training targets.
fn unigram(train: &[u32], ctx: usize, vocab: usize) -> Vec<f64> {
    let mut counts = vec![1f64; vocab];
    for (_, t) in pairs(train, ctx) {
        counts[t as usize] += 1.0;
    }
    let total: f64 = counts.iter().sum();
    counts.iter().map(|c| c / total).collect()
}

/// Cross-entropy (nats) of an add-one smoothed unigram model on the held-out targets.
pub fn unigram_loss(train: &[u32], heldout: &[u32], ctx: usize, vocab: usize) -> f64 {
    let p = unigram(train, ctx, vocab);
    mean(pairs(heldout, ctx).map(|(_, t)| -p[t as usize].ln()))
}

/// Cross-entropy (nats) of a bigram model with Witten-Bell interpolation to the add-one unigram:
/// p(b | a) = (c(a, b) + T(a)·p(b)) / (c(a) + T(a)), T(a) the number of distinct successors of a.
pub fn bigram_loss(train: &[u32], heldout: &[u32], ctx: usize, vocab: usize) -> f64 {
    let p = unigram(train, ctx, vocab);
    let mut pair: HashMap<(u32, u32), f64> = HashMap::new();
    let mut after = vec![(0f64, 0f64); vocab]; // (c(a), T(a))
    for (a, b) in pairs(train, ctx) {
        let c = pair.entry((a, b)).or_insert(0.0);
        if *c == 0.0 {
            after[a as usize].1 += 1.0;
        }
        *c += 1.0;
        after[a as usize].0 += 1.0;
    }
    mean(pairs(heldout, ctx).map(|(a, b)| {
        let (ca, ta) = after[a as usize];
        let cab = pair.get(&(a, b)).copied().unwrap_or(0.0);
        let q = if ca == 0.0 { p[b as usize] } else { (cab + ta * p[b as usize]) / (ca + ta) };
        -q.ln()
    }))
}

fn mean(it: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = it.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_sequence_is_predictable_by_bigrams() {
        let rows: Vec<u32> = (0..400).map(|i| i % 4).collect();
        let (uni, bi) = (unigram_loss(&rows, &rows, 8, 4), bigram_loss(&rows, &rows, 8, 4));
        assert!(uni > 1.2, "unigram {uni}");
        assert!(bi < 0.05, "bigram {bi}");
    }
}
