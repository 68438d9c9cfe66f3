//! Deterministic scorer arithmetic: exact string equality, multiple-choice answer extraction and
//! sentence BLEU. Template rendering and I/O happen in the scorer module; everything here is a
//! pure function of its arguments.

use std::collections::HashMap;

/// Exact equality, sensitive to case and whitespace (as the original `string_equals`).
pub fn string_equals(value: &str, ground_truth: &str) -> bool {
    value == ground_truth
}

/// Outcome of a multiple-choice comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McqaResult {
    /// The completion chose `ground_truth_choice`.
    pub is_correct: bool,
    /// The completion opened with exactly one recognisable choice; `false` is reported as
    /// metadata `completion_validity: INVALID`.
    pub valid: bool,
}

/// Reads the choice a completion opens with and compares it to `ground_truth_choice`.
///
/// After leading whitespace the completion must start with a choice written as `A`, `(A)`,
/// `A.`, `A)` or `A:` — i.e. the choice, optionally in parentheses, followed by the end of the
/// text or by a character that is not a letter or digit (so `Answer: B` and `AB` are invalid,
/// `A because …` is valid). Matching is case-sensitive, like the original. Single-character
/// choices are the original's contract; longer choices follow the same rule. When more than one
/// distinct choice matches (possible only with longer choices that share a prefix-and-boundary,
/// e.g. `A` and `A.1`), the completion is ambiguous and therefore invalid.
pub fn string_equals_mcqa(completion: &str, ground_truth_choice: &str, choices: &[String]) -> McqaResult {
    let text = completion.trim_start();
    let mut chosen: Option<&str> = None;
    for choice in choices.iter().map(String::as_str) {
        if choice.is_empty() || chosen == Some(choice) || !opens_with_choice(text, choice) {
            continue;
        }
        if chosen.is_some() {
            return McqaResult {
                is_correct: false,
                valid: false,
            };
        }
        chosen = Some(choice);
    }
    match chosen {
        Some(choice) => McqaResult {
            is_correct: choice == ground_truth_choice,
            valid: true,
        },
        None => McqaResult {
            is_correct: false,
            valid: false,
        },
    }
}

fn opens_with_choice(text: &str, choice: &str) -> bool {
    let bounded = |rest: &str| rest.chars().next().is_none_or(|c| !c.is_alphanumeric());
    if let Some(rest) = text.strip_prefix(choice) {
        return bounded(rest);
    }
    text.strip_prefix('(')
        .and_then(|rest| rest.strip_prefix(choice))
        .and_then(|rest| rest.strip_prefix(')'))
        .is_some_and(bounded)
}

/// Sentence BLEU-4 of `candidate` against one `reference`.
///
/// Tokens are whitespace-separated words (case-sensitive, punctuation kept). Modified n-gram
/// precisions for n = 1..4 are clipped by the reference counts and combined with uniform
/// weights (geometric mean), times the brevity penalty `exp(1 - r/c)` when the candidate is
/// shorter than the reference. Smoothing is Lin & Och (2004) add-one for n > 1 — NLTK's
/// `SmoothingFunction().method2`: p_n = (matches + 1) / (total + 1) for n = 2..4, while the
/// unigram precision is unsmoothed, so no word in common gives 0.0. An empty candidate scores
/// 0.0 (even against an empty reference); identical non-empty strings score 1.0.
pub fn bleu(candidate: &str, reference: &str) -> f64 {
    const MAX_N: usize = 4;
    let cand: Vec<&str> = candidate.split_whitespace().collect();
    let refs: Vec<&str> = reference.split_whitespace().collect();
    if cand.is_empty() {
        return 0.0;
    }
    let mut log_sum = 0.0;
    for n in 1..=MAX_N {
        let (matches, total) = clipped_matches(&cand, &refs, n);
        let precision = if n == 1 {
            if matches == 0 {
                return 0.0;
            }
            matches as f64 / total as f64
        } else {
            (matches + 1) as f64 / (total + 1) as f64
        };
        log_sum += precision.ln() / MAX_N as f64;
    }
    let (c, r) = (cand.len() as f64, refs.len() as f64);
    let brevity = if c > r { 1.0 } else { (1.0 - r / c).exp() };
    brevity * log_sum.exp()
}

/// (clipped candidate n-grams found in the reference, candidate n-gram count)
fn clipped_matches(cand: &[&str], refs: &[&str], n: usize) -> (usize, usize) {
    let mut available: HashMap<&[&str], usize> = HashMap::new();
    for gram in refs.windows(n) {
        *available.entry(gram).or_default() += 1;
    }
    let mut matches = 0;
    let mut total = 0;
    for gram in cand.windows(n) {
        total += 1;
        if let Some(left) = available.get_mut(gram).filter(|left| **left > 0) {
            *left -= 1;
            matches += 1;
        }
    }
    (matches, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abcd() -> Vec<String> {
        ["A", "B", "C", "D"].iter().map(|s| s.to_string()).collect()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn string_equals_is_exact() {
        assert!(string_equals("Paris", "Paris"));
        assert!(!string_equals("paris", "Paris"));
        assert!(!string_equals("Paris ", "Paris"));
        assert!(!string_equals("Paris\n", "Paris"));
        assert!(string_equals("", ""));
    }

    #[test]
    fn mcqa_accepts_common_forms() {
        let choices = abcd();
        for completion in [
            "B",
            "  B",
            "\nB\n",
            "(B)",
            "(B) Paris",
            "B.",
            "B. Paris",
            "B)",
            "B) Paris",
            "B: Paris",
            "B because it is",
            "B, definitely",
        ] {
            let r = string_equals_mcqa(completion, "B", &choices);
            assert_eq!(
                r,
                McqaResult {
                    is_correct: true,
                    valid: true
                },
                "{completion:?}"
            );
        }
    }

    #[test]
    fn mcqa_valid_but_wrong() {
        let r = string_equals_mcqa("C. Rome", "B", &abcd());
        assert_eq!(
            r,
            McqaResult {
                is_correct: false,
                valid: true
            }
        );
    }

    #[test]
    fn mcqa_rejects_unclear_openings() {
        let choices = abcd();
        for completion in [
            "",
            "   ",
            "Answer: B",
            "AB",
            "b",
            "(B",
            "(B.",
            "E",
            "The answer is B",
            "Because",
            "B2",
        ] {
            let r = string_equals_mcqa(completion, "B", &choices);
            assert_eq!(
                r,
                McqaResult {
                    is_correct: false,
                    valid: false
                },
                "{completion:?}"
            );
        }
    }

    #[test]
    fn mcqa_longer_choices_and_ambiguity() {
        let choices: Vec<String> = ["A", "A.1", "B"].iter().map(|s| s.to_string()).collect();
        // "A.1 …" opens with both `A` (followed by '.') and `A.1` (followed by ' ')
        let r = string_equals_mcqa("A.1 yes", "A.1", &choices);
        assert_eq!(
            r,
            McqaResult {
                is_correct: false,
                valid: false
            }
        );
        let yes_no: Vec<String> = ["Yes", "No"].iter().map(|s| s.to_string()).collect();
        let r = string_equals_mcqa("No, never", "No", &yes_no);
        assert_eq!(
            r,
            McqaResult {
                is_correct: true,
                valid: true
            }
        );
        // duplicates in the choice list are not ambiguity
        let dup: Vec<String> = ["A", "A", "B"].iter().map(|s| s.to_string()).collect();
        let r = string_equals_mcqa("A", "A", &dup);
        assert_eq!(
            r,
            McqaResult {
                is_correct: true,
                valid: true
            }
        );
    }

    #[test]
    fn bleu_identical_and_disjoint() {
        close(bleu("the cat sat on the mat", "the cat sat on the mat"), 1.0);
        // shorter than 4 tokens: every n > 1 precision is (0+1)/(0+1) = 1 → still 1.0
        close(bleu("hello world", "hello world"), 1.0);
        close(bleu("a b c d", "e f g h"), 0.0);
        close(bleu("", "anything"), 0.0);
        close(bleu("", ""), 0.0);
        close(bleu("something", ""), 0.0);
    }

    #[test]
    fn bleu_partial_overlap_hand_computed() {
        // candidate: the cat sat on the mat; reference: the cat is on the mat (c = r = 6, BP = 1)
        // p1: the×2, cat, on, mat match; sat does not → 5/6
        // p2: "the cat", "on the", "the mat" of 5 → (3+1)/(5+1) = 2/3
        // p3: "on the mat" of 4 → (1+1)/(4+1) = 2/5
        // p4: none of 3 → (0+1)/(3+1) = 1/4
        // BLEU = (5/6 · 2/3 · 2/5 · 1/4)^(1/4) = (1/18)^(1/4) ≈ 0.4855
        let expected = (1.0f64 / 18.0).powf(0.25);
        close(bleu("the cat sat on the mat", "the cat is on the mat"), expected);
    }

    #[test]
    fn bleu_brevity_penalty_and_clipping() {
        // c = 2, r = 6: all precisions 1 (p1 = 2/2; p2 = (1+1)/(1+1); p3, p4 = 1/1)
        // BP = exp(1 - 6/2) = exp(-2)
        close(bleu("the cat", "the cat sat on the mat"), (-2.0f64).exp());
        // clipping: "the the the the" vs "the cat": p1 = 1/4 (only one "the" counts)
        // p2 = (0+1)/(3+1) = 1/4, p3 = (0+1)/(2+1) = 1/3, p4 = (0+1)/(1+1) = 1/2; c=4 > r=2, BP=1
        // BLEU = (1/4 · 1/4 · 1/3 · 1/2)^(1/4) = (1/96)^(1/4)
        close(bleu("the the the the", "the cat"), (1.0f64 / 96.0).powf(0.25));
    }

    #[test]
    fn bleu_tokenises_on_any_whitespace() {
        close(bleu("the\tcat \n sat", "the cat sat"), 1.0);
    }
}
