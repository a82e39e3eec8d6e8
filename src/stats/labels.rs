//! How mixed a neuron's top examples are: the distribution of their source labels (dataset file,
//! language, Pile subset, a user column) and its entropy, raw and relative to the labels' base
//! rates — a polysemanticity measure.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub struct LabelMix {
    /// The most common label (ties: the first in name order).
    pub top: String,
    pub top_share: f64,
    /// Shannon entropy of the label distribution, in bits (0: one label).
    pub entropy: f64,
    pub distinct: usize,
    /// (label, count), most common first.
    pub counts: Vec<(String, usize)>,
}

impl LabelMix {
    pub fn of<'a>(labels: impl IntoIterator<Item = &'a str>) -> Option<LabelMix> {
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for l in labels {
            *by.entry(l).or_default() += 1;
        }
        let n: usize = by.values().sum();
        if n == 0 {
            return None;
        }
        let mut counts: Vec<(String, usize)> = by.into_iter().map(|(l, c)| (l.to_string(), c)).collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let entropy = counts.iter().map(|(_, c)| *c as f64 / n as f64).map(|p| -p * p.log2()).sum::<f64>().max(0.0);
        Some(LabelMix {
            top: counts[0].0.clone(),
            top_share: counts[0].1 as f64 / n as f64,
            entropy,
            distinct: counts.len(),
            counts,
        })
    }
}

impl LabelMix {
    /// Entropy (bits) of the label distribution after dividing each label's count by its base
    /// rate (its share of the data): a neuron whose top examples follow the data's own mix scores
    /// the maximum, log2(labels), one that picks a single label 0. Labels without a base rate
    /// count as they are.
    pub fn normalised_entropy(&self, base: &BTreeMap<String, f64>) -> f64 {
        let w: Vec<f64> = self
            .counts
            .iter()
            .map(|(l, c)| *c as f64 / base.get(l).copied().filter(|b| *b > 0.0).unwrap_or(1.0))
            .collect();
        let total: f64 = w.iter().sum();
        w.iter().map(|x| x / total).filter(|p| *p > 0.0).map(|p| -p * p.log2()).sum::<f64>().max(0.0)
    }
}

/// Each label's share of `labels`.
pub fn base_rates<'a>(labels: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, f64> {
    let mut by: BTreeMap<String, f64> = BTreeMap::new();
    let mut n = 0.0;
    for l in labels {
        *by.entry(l.to_string()).or_default() += 1.0;
        n += 1.0;
    }
    by.values_mut().for_each(|v| *v /= n);
    by
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_a_hand_made_mix() {
        let m = LabelMix::of(["en", "de", "en", "code", "en", "de", "en", "code"]).unwrap();
        assert_eq!((m.top.as_str(), m.top_share, m.distinct), ("en", 0.5, 3));
        assert!((m.entropy - 1.5).abs() < 1e-12, "{}", m.entropy);
        assert_eq!(m.counts, vec![("en".into(), 4), ("code".into(), 2), ("de".into(), 2)]);
        assert_eq!(LabelMix::of(["x"; 5]).unwrap().entropy, 0.0);
        assert!(LabelMix::of([]).is_none());
    }

    #[test]
    fn entropy_relative_to_base_rates() {
        // The data is 90% text, 10% code; top examples in the same proportion are as mixed as
        // can be (1 bit), all text is 0, and 50/50 leans to code.
        let base = base_rates(std::iter::repeat_n("text", 9).chain(["code"]));
        assert!((base["text"] - 0.9).abs() < 1e-12);
        let follows = LabelMix::of(std::iter::repeat_n("text", 18).chain(["code"; 2])).unwrap();
        assert!((follows.normalised_entropy(&base) - 1.0).abs() < 1e-12);
        assert!(follows.entropy < 0.5);
        assert_eq!(LabelMix::of(["text"; 4]).unwrap().normalised_entropy(&base), 0.0);
        let even = LabelMix::of(["text", "code"]).unwrap();
        let p = 0.1f64; // (0.5 / 0.9) / (0.5 / 0.9 + 0.5 / 0.1)
        assert!((even.normalised_entropy(&base) - (-p * p.log2() - (1.0 - p) * (1.0 - p).log2())).abs() < 1e-12);
    }
}
