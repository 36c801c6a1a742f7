//! Container ids and generated names.

use rand::seq::IndexedRandom;
use rand::Rng;

/// A new container id: 64 hex digits, as Docker's.
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const ADJECTIVES: &[&str] = &[
    "admiring",
    "agitated",
    "amazing",
    "awesome",
    "bold",
    "brave",
    "busy",
    "calm",
    "clever",
    "cool",
    "dazzling",
    "eager",
    "ecstatic",
    "elegant",
    "epic",
    "festive",
    "focused",
    "friendly",
    "gallant",
    "gifted",
    "happy",
    "hopeful",
    "jolly",
    "keen",
    "kind",
    "laughing",
    "loving",
    "lucid",
    "modest",
    "nice",
    "nifty",
    "peaceful",
    "pensive",
    "practical",
    "quirky",
    "relaxed",
    "serene",
    "sharp",
    "silly",
    "stoic",
    "sweet",
    "tender",
    "upbeat",
    "vibrant",
    "wizardly",
    "youthful",
    "zealous",
];

const SURNAMES: &[&str] = &[
    "babbage", "bardeen", "bell", "bohr", "brattain", "cerf", "curie", "darwin", "dijkstra",
    "einstein", "euler", "faraday", "fermi", "feynman", "franklin", "galileo", "gauss", "hamilton",
    "hopper", "hypatia", "johnson", "kepler", "knuth", "lamarr", "lovelace", "maxwell", "meitner",
    "mendel", "newton", "noether", "pascal", "planck", "ritchie", "shannon", "thompson",
    "torvalds", "turing", "volta", "wozniak", "yalow",
];

/// A name like `happy_turing`, different from every one in `taken`.
pub fn new_name(taken: &dyn Fn(&str) -> bool) -> String {
    let mut rng = rand::rng();
    for attempt in 0.. {
        let a = ADJECTIVES.choose(&mut rng).copied().unwrap_or("happy");
        let s = SURNAMES.choose(&mut rng).copied().unwrap_or("turing");
        let name = if attempt < 10 {
            format!("{a}_{s}")
        } else {
            format!("{a}_{s}{}", rng.random_range(0..100))
        };
        if !taken(&name) {
            return name;
        }
    }
    unreachable!("the loop above only ends by returning")
}

/// Docker's rule for container names.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        let n = new_name(&|_| false);
        assert!(valid_name(&n) && n.contains('_'), "{n}");
        let n = new_name(&|n| !n.chars().last().unwrap().is_ascii_digit());
        assert!(n.chars().last().unwrap().is_ascii_digit());
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("-web") && !valid_name("") && !valid_name("a b") && !valid_name("a/b"));
    }
}
