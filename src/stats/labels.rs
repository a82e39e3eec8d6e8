//! How mixed a neuron's top examples are: the distribution of their source labels (dataset file,
//! language, Pile subset, a user column) and its entropy — a polysemanticity measure.

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
}
