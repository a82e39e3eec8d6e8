//! Boolean token features for explaining neurons (Universal Neurons §1.6): predicates on a token's
//! string (case and type, leading space, punctuation and symbols, digits / years / number words,
//! common prefixes and suffixes, word classes), unigram groups and user token sets.

use crate::model::Tokenizer;
use anyhow::{Context, Result};
use std::collections::BTreeMap;

/// One boolean feature: its name and the family it belongs to (`case`, `suffix`, `unigram`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feature {
    pub name: String,
    pub group: String,
}

/// Features of the vocabulary: the list and, per token id, the indices of the features it has.
#[derive(Clone, Debug, Default)]
pub struct TokenFeatures {
    pub features: Vec<Feature>,
    pub of_token: Vec<Vec<u32>>,
}

impl TokenFeatures {
    /// An empty feature set over a vocabulary of `n` tokens.
    pub fn new(n: usize) -> TokenFeatures {
        TokenFeatures { features: vec![], of_token: vec![vec![]; n] }
    }

    /// Add a feature true for `tokens`; features true for no token are skipped.
    pub fn push(&mut self, name: impl Into<String>, group: &str, tokens: impl IntoIterator<Item = u32>) {
        let i = self.features.len() as u32;
        let mut any = false;
        for t in tokens {
            if let Some(list) = self.of_token.get_mut(t as usize) {
                if list.last() != Some(&i) {
                    list.push(i);
                    any = true;
                }
            }
        }
        if any {
            self.features.push(Feature { name: name.into(), group: group.to_string() });
        }
    }

    /// The built-in string features of every token (`strings[id]` = the decoded token).
    pub fn builtin(strings: &[String]) -> TokenFeatures {
        let mut tf = TokenFeatures::new(strings.len());
        for (name, group, pred) in predicates() {
            tf.push(name, group, strings.iter().enumerate().filter(|(_, s)| pred(s)).map(|(i, _)| i as u32));
        }
        tf
    }
}

/// A token's string normalised for unigram grouping: lowercased, surrounding whitespace stripped.
pub fn unigram_key(s: &str) -> String {
    s.trim().to_lowercase()
}

/// Unigram groups: token ids whose strings are equal once lowercased and stripped (`"The"`,
/// `" the"`, `" THE"`), kept when the group spans more than `ids_above` token ids of the
/// vocabulary and its tokens occur more than `count_above` times in the data (`counts[id]`): the
/// study's `> 3` and `> 3000`. Sorted by key.
pub fn unigram_groups(
    strings: &[String],
    counts: &[u64],
    count_above: u64,
    ids_above: usize,
) -> Vec<(String, Vec<u32>)> {
    let mut groups: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (id, s) in strings.iter().enumerate() {
        let key = unigram_key(s);
        if !key.is_empty() && !key.contains('\u{fffd}') {
            groups.entry(key).or_default().push(id as u32);
        }
    }
    groups
        .into_iter()
        .filter(|(_, ids)| {
            ids.len() > ids_above
                && ids.iter().map(|&i| counts.get(i as usize).copied().unwrap_or(0)).sum::<u64>() > count_above
        })
        .collect()
}

type Pred = Box<dyn Fn(&str) -> bool>;

const NUMBER_WORDS: &[&str] = &[
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
    "hundred",
    "thousand",
    "million",
    "billion",
    "trillion",
    "dozen",
];
const ORDINALS: &[&str] =
    &["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "last"];
const MONTHS: &[&str] = &[
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "jan",
    "feb",
    "mar",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
];
const DAYS: &[&str] = &["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
const PRONOUNS: &[&str] = &[
    "i", "me", "my", "mine", "you", "your", "yours", "he", "him", "his", "she", "her", "hers", "it", "its", "we", "us",
    "our", "ours", "they", "them", "their", "theirs",
];
const ARTICLES: &[&str] = &["a", "an", "the"];
const PREPOSITIONS: &[&str] = &[
    "of", "in", "to", "for", "with", "on", "at", "from", "by", "about", "into", "over", "after", "under", "between",
    "through", "during", "without", "against",
];
const CONJUNCTIONS: &[&str] = &["and", "or", "but", "nor", "so", "yet", "because", "although", "while", "if"];
const AUX_VERBS: &[&str] = &[
    "is", "are", "was", "were", "be", "been", "being", "am", "has", "have", "had", "do", "does", "did", "will",
    "would", "can", "could", "should", "may", "might", "must",
];
const PREFIXES: &[&str] = &[
    "un", "re", "in", "im", "dis", "pre", "non", "over", "mis", "sub", "inter", "de", "en", "anti", "auto", "ex", "co",
    "con", "com", "pro", "trans", "under", "super", "semi",
];
const SUFFIXES: &[&str] = &[
    "s", "es", "ed", "ing", "ly", "er", "est", "tion", "sion", "ment", "ness", "able", "ible", "al", "ial", "ous",
    "ive", "ful", "less", "ity", "ism", "ist", "ize", "ise", "ant", "ent", "ance", "ence", "ic", "ical", "ure", "ship",
    "hood", "ward", "ry", "y", "ee", "an", "ian", "age",
];

fn letters(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().filter(|c| c.is_alphabetic())
}

fn word_in(list: &'static [&'static str]) -> Pred {
    Box::new(move |s: &str| {
        let w = s.trim().to_lowercase();
        list.contains(&w.as_str())
    })
}

/// (name, group, predicate) of every built-in string feature.
fn predicates() -> Vec<(String, &'static str, Pred)> {
    let mut v: Vec<(String, &'static str, Pred)> = Vec::new();
    let mut add = |name: &str, group: &'static str, p: Pred| v.push((name.to_string(), group, p));
    // Case and type (of the token with surrounding whitespace stripped).
    add("all_lower", "case", Box::new(|s| letters(s).next().is_some() && letters(s).all(char::is_lowercase)));
    add("all_upper", "case", Box::new(|s| letters(s).count() >= 2 && letters(s).all(char::is_uppercase)));
    add(
        "title_case",
        "case",
        Box::new(|s| {
            let l: Vec<char> = letters(s).collect();
            l.len() >= 2 && l[0].is_uppercase() && l[1..].iter().all(|c| c.is_lowercase())
        }),
    );
    add("is_alpha", "type", Box::new(|s| !s.trim().is_empty() && s.trim().chars().all(char::is_alphabetic)));
    add("is_numeric", "type", Box::new(|s| !s.trim().is_empty() && s.trim().chars().all(|c| c.is_ascii_digit())));
    add(
        "alnum_mixed",
        "type",
        Box::new(|s| s.chars().any(char::is_alphabetic) && s.chars().any(|c| c.is_ascii_digit())),
    );
    add("is_whitespace", "type", Box::new(|s| !s.is_empty() && s.trim().is_empty()));
    add("contains_newline", "type", Box::new(|s| s.contains('\n')));
    add("non_ascii", "type", Box::new(|s| !s.is_ascii()));
    add("single_char", "type", Box::new(|s| s.trim().chars().count() == 1));
    // Leading space and first character.
    add("starts_with_space", "space", Box::new(|s| s.starts_with(' ')));
    add("word_continuation", "space", Box::new(|s| s.chars().next().is_some_and(char::is_alphabetic)));
    add("starts_with_capital", "start", Box::new(|s| s.trim_start().chars().next().is_some_and(char::is_uppercase)));
    add(
        "starts_with_vowel",
        "start",
        Box::new(|s| s.trim_start().chars().next().is_some_and(|c| "aeiouAEIOU".contains(c))),
    );
    add("starts_with_letter", "start", Box::new(|s| s.trim_start().chars().next().is_some_and(char::is_alphabetic)));
    add("starts_with_digit", "start", Box::new(|s| s.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit())));
    // Punctuation and symbols.
    add(
        "is_punctuation",
        "punctuation",
        Box::new(|s| !s.trim().is_empty() && s.trim().chars().all(|c| c.is_ascii_punctuation())),
    );
    add("contains_punctuation", "punctuation", Box::new(|s| s.chars().any(|c| c.is_ascii_punctuation())));
    add("contains_open_paren", "punctuation", Box::new(|s| s.contains(['(', '[', '{'])));
    add("contains_close_paren", "punctuation", Box::new(|s| s.contains([')', ']', '}'])));
    add("contains_quote", "punctuation", Box::new(|s| s.contains(['"', '\'', '`', '“', '”', '‘', '’'])));
    add("is_period", "punctuation", Box::new(|s| s.trim() == "."));
    add("is_comma", "punctuation", Box::new(|s| s.trim() == ","));
    add("is_colon", "punctuation", Box::new(|s| matches!(s.trim(), ":" | ";")));
    add("is_dash", "punctuation", Box::new(|s| matches!(s.trim(), "-" | "--" | "—" | "–")));
    add("ends_sentence", "punctuation", Box::new(|s| matches!(s.trim(), "." | "!" | "?" | "...")));
    add(
        "contains_symbol",
        "symbol",
        Box::new(|s| s.contains(['#', '$', '%', '&', '*', '+', '<', '=', '>', '@', '\\', '^', '_', '|', '~', '/'])),
    );
    add("contains_currency", "symbol", Box::new(|s| s.contains(['$', '€', '£', '¥'])));
    add("contains_math", "symbol", Box::new(|s| s.contains(['+', '=', '<', '>', '*', '^'])));
    // Numbers.
    add("contains_digit", "number", Box::new(|s| s.chars().any(|c| c.is_ascii_digit())));
    add("single_digit", "number", Box::new(|s| s.trim().len() == 1 && s.trim().chars().all(|c| c.is_ascii_digit())));
    add(
        "is_year",
        "number",
        Box::new(|s| {
            let t = s.trim();
            t.len() == 4
                && t.chars().all(|c| c.is_ascii_digit())
                && (1000..=2099).contains(&t.parse::<u32>().unwrap_or(0))
        }),
    );
    add("number_word", "number", word_in(NUMBER_WORDS));
    add("ordinal_word", "number", word_in(ORDINALS));
    // Word classes.
    add("month", "word", word_in(MONTHS));
    add("weekday", "word", word_in(DAYS));
    add("pronoun", "word", word_in(PRONOUNS));
    add("article", "word", word_in(ARTICLES));
    add("preposition", "word", word_in(PREPOSITIONS));
    add("conjunction", "word", word_in(CONJUNCTIONS));
    add("auxiliary_verb", "word", word_in(AUX_VERBS));
    // Prefixes and suffixes of alphabetic tokens longer than the affix + 1.
    for &p in PREFIXES {
        add(
            &format!("prefix_{p}"),
            "prefix",
            Box::new(move |s| {
                let w = s.trim().to_lowercase();
                w.len() > p.len() + 1 && w.starts_with(p) && w.chars().all(char::is_alphabetic)
            }),
        );
    }
    for &x in SUFFIXES {
        add(
            &format!("suffix_{x}"),
            "suffix",
            Box::new(move |s| {
                let w = s.trim().to_lowercase();
                w.len() > x.len() + 1 && w.ends_with(x) && w.chars().all(char::is_alphabetic)
            }),
        );
    }
    for c in 'a'..='z' {
        add(
            &format!("first_letter_{c}"),
            "first_letter",
            Box::new(move |s| s.trim_start().chars().next().is_some_and(|f| f.to_ascii_lowercase() == c)),
        );
    }
    v
}

/// Token sets named in an experiment, as token ids (each string must be one token).
pub fn token_sets(tok: &Tokenizer, sets: &BTreeMap<String, Vec<String>>) -> Result<Vec<(String, Vec<u32>)>> {
    sets.iter()
        .map(|(name, strs)| {
            Ok((
                name.clone(),
                strs.iter()
                    .map(|s| tok.single_token(s))
                    .collect::<Result<Vec<u32>>>()
                    .with_context(|| format!("token set '{name}'"))?,
            ))
        })
        .collect()
}

/// String features, unigram groups (counted in `data`) and token sets of every token id.
pub fn vocabulary_features(
    tok: &Tokenizer,
    vocab: usize,
    counts: Option<(&[u64], u64, usize)>,
    sets: &BTreeMap<String, Vec<String>>,
) -> Result<TokenFeatures> {
    let strings: Vec<String> = (0..vocab as u32).map(|i| tok.token_str(i)).collect();
    let mut tf = TokenFeatures::builtin(&strings);
    if let Some((counts, count_above, ids_above)) = counts {
        for (key, ids) in unigram_groups(&strings, counts, count_above, ids_above) {
            tf.push(format!("unigram {key:?}"), "unigram", ids);
        }
    }
    for (name, ids) in token_sets(tok, sets)? {
        tf.push(name, "token_set", ids);
    }
    Ok(tf)
}
