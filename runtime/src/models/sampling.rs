//! Choosing the next token from a step's logits, for text generation: repetition penalty,
//! temperature, top-k and top-p (nucleus), the logprobs OpenAI's `logprobs` / `top_logprobs`
//! report, stop sequences over the streamed text, and where a byte stream may be cut without
//! splitting a UTF-8 character.
//!
//! The steps run in Hugging Face `generate`'s order (`RepetitionPenaltyLogitsProcessor`, then
//! `TemperatureLogitsWarper`, `TopKLogitsWarper`, `TopPLogitsWarper`); the draw comes from a
//! ChaCha8 stream seeded by the request's `seed`, so the same request gives the same tokens.

use std::cmp::Ordering;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// OpenAI's range for `temperature`.
pub const MAX_TEMPERATURE: f32 = 2.0;
/// The largest `top_k` accepted. On a vocabulary of tens of thousands, keeping more than a
/// thousand tokens no longer shapes the distribution in any useful way (the mass out there is
/// negligible), so a larger value is more likely a mix-up (with `max_tokens`, say) than intent;
/// rejecting it says so, and `0` turns top-k off explicitly.
pub const MAX_TOP_K: usize = 1024;
/// A penalty of 10 already divides a repeated token's logit by ten; beyond that it only makes
/// repetition impossible, which a client should ask for with `logit_bias` instead.
pub const MAX_REPETITION_PENALTY: f32 = 10.0;
/// OpenAI's limit on `top_logprobs`.
pub const MAX_TOP_LOGPROBS: usize = 20;
/// OpenAI's limit on the number of `stop` sequences.
pub const MAX_STOPS: usize = 4;

/// Slack in the nucleus's "cumulative probability ≥ top_p" test. The logits are f32, so a
/// probability carries a relative error near 1e-7: without slack, a set whose mass is top_p on
/// paper (0.5 + 0.3 against 0.8) could land a hair short and pull in one more token.
const TOP_P_SLACK: f64 = 1e-6;

/// How many of the best tokens the nucleus search sorts first; it widens eightfold while their
/// mass is short of top_p, so a peaked distribution never pays for sorting the whole vocabulary.
const NUCLEUS_FIRST_GUESS: usize = 64;

/// How one request chooses its tokens; the fields carry the OpenAI names and meanings.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 picks the most likely token (greedy); higher flattens the distribution.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 is off.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability adds up to `top_p`; 1 is off.
    pub top_p: f32,
    /// CTRL's penalty on tokens already in the context; 1 is off.
    pub repetition_penalty: f32,
    /// Seeds the draw: the same seed and logits give the same tokens.
    pub seed: u64,
    /// How many of the most likely alternatives to report with each token; `None` reports none.
    pub top_logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, seed: 0, top_logprobs: None }
    }
}

/// A request's sampling field is out of range; `field` is its OpenAI name, for the error body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid `{field}`: {reason}")]
pub struct InvalidSampling {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidSampling {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        InvalidSampling { field, reason: reason.into() }
    }
}

impl SamplingParams {
    /// Checks every field against the range OpenAI (or, for the fields OpenAI lacks, this module)
    /// accepts, and names the first one out of range.
    pub fn validate(&self) -> Result<(), InvalidSampling> {
        let t = self.temperature;
        if !(t.is_finite() && (0.0..=MAX_TEMPERATURE).contains(&t)) {
            return Err(InvalidSampling::new("temperature", format!("{t} is not in [0, {MAX_TEMPERATURE}]; use 0 for greedy decoding")));
        }
        let p = self.top_p;
        if !(p.is_finite() && p > 0.0 && p <= 1.0) {
            return Err(InvalidSampling::new("top_p", format!("{p} is not in (0, 1]; use 1 to turn it off")));
        }
        if self.top_k > MAX_TOP_K {
            return Err(InvalidSampling::new("top_k", format!("{} is more than {MAX_TOP_K}; use 0 to turn it off", self.top_k)));
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0 && r <= MAX_REPETITION_PENALTY) {
            return Err(InvalidSampling::new(
                "repetition_penalty",
                format!("{r} is not in (0, {MAX_REPETITION_PENALTY}]; use 1 to turn it off"),
            ));
        }
        if let Some(n) = self.top_logprobs {
            if n > MAX_TOP_LOGPROBS {
                return Err(InvalidSampling::new("top_logprobs", format!("{n} is more than {MAX_TOP_LOGPROBS}")));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// Every logit was NaN or -inf (or there were none): the forward pass went wrong upstream.
    #[error(
        "none of the {vocab} logits is finite, so no token can be chosen; the model's forward pass \
         produced NaN or -inf throughout (an overflow or a bad weight), not the request"
    )]
    NoFiniteLogits { vocab: usize },
}

/// One chosen token and what OpenAI's `logprobs` reports with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: u32,
    /// ln p(token) under the model's distribution: see [`Sampler::sample`].
    pub logprob: f32,
    /// The `top_logprobs` most likely tokens of that same distribution, (id, logprob), most likely
    /// first (ties: lower id first); empty when `top_logprobs` is `None`.
    pub top: Vec<(u32, f32)>,
}

/// Chooses tokens one step at a time for one request.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    /// The step's logits after the repetition penalty, NaN read as -inf; kept across steps so a
    /// step reuses the allocation.
    penalised: Vec<f32>,
    /// Token ids being ranked or drawn from; reused across steps likewise.
    ids: Vec<u32>,
    /// The distinct tokens of the history, for the penalty.
    seen: Vec<u32>,
}

impl Sampler {
    /// A sampler for `params`, which must pass [`SamplingParams::validate`].
    pub fn new(params: SamplingParams) -> Result<Self, InvalidSampling> {
        params.validate()?;
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Ok(Sampler { params, rng, penalised: Vec::new(), ids: Vec::new(), seen: Vec::new() })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Chooses the next token from one step's `logits` (one per vocabulary entry), given the
    /// tokens of the context so far (`history`: prompt and generated, for the repetition penalty).
    ///
    /// The reported `logprob` and `top` come from the log-softmax of the logits after the
    /// repetition penalty but before temperature, top-k and top-p: the model's own distribution,
    /// as vLLM reports by default ("raw" logprobs). The sampling knobs change which token is
    /// drawn, not how likely the model found it; a greedy token therefore has a logprob below 0.
    ///
    /// NaN logits are read as -inf (never chosen) and +inf as the largest finite f32.
    /// Temperature 0 takes the most likely token, the lower id on a tie, and draws nothing from
    /// the random stream; any other temperature draws exactly one number per call.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<Sampled, SamplingError> {
        self.penalise(logits, history);
        let dist = LogSoftmax::over(&self.penalised).ok_or(SamplingError::NoFiniteLogits { vocab: logits.len() })?;
        let token = if self.params.temperature == 0.0 { argmax_lowest_id(&self.penalised) } else { self.draw(dist.max) };
        let logprob = dist.logprob(self.penalised[token as usize]);
        let top = match self.params.top_logprobs {
            Some(n) if n > 0 => self.top_logprobs(n, &dist),
            _ => Vec::new(),
        };
        Ok(Sampled { token, logprob, top })
    }

    /// Copies `logits` into `self.penalised`, cleaned of NaN and +inf, and applies CTRL's
    /// repetition penalty (Keskar et al. 2019, as Hugging Face's
    /// `RepetitionPenaltyLogitsProcessor`): once per distinct token of `history`, a positive logit
    /// is divided by the penalty and any other multiplied, so both move towards "less likely".
    fn penalise(&mut self, logits: &[f32], history: &[u32]) {
        self.penalised.clear();
        self.penalised.extend(logits.iter().map(|&x| {
            if x.is_nan() {
                f32::NEG_INFINITY
            } else if x == f32::INFINITY {
                // Keeps the softmax defined (inf - inf is NaN) and still gives the token all the mass.
                f32::MAX
            } else {
                x
            }
        }));
        let penalty = self.params.repetition_penalty;
        if penalty == 1.0 || history.is_empty() {
            return;
        }
        self.seen.clear();
        self.seen.extend_from_slice(history);
        self.seen.sort_unstable();
        self.seen.dedup();
        for &id in &self.seen {
            // An id outside the vocabulary cannot be chosen again, so there is nothing to penalise.
            if let Some(x) = self.penalised.get_mut(id as usize) {
                *x = if *x > 0.0 { *x / penalty } else { *x * penalty };
            }
        }
    }

    /// Draws one token after temperature, top-k and top-p. `max` is the largest logit.
    fn draw(&mut self, max: f32) -> u32 {
        let Sampler { params, rng, penalised: logits, ids, .. } = self;
        let logits: &[f32] = logits;
        let inv_temperature = 1.0 / f64::from(params.temperature);
        // exp((x - max) / T): the softmax numerator after temperature, ≤ 1 and 1 at the best token.
        let weight = |id: u32| ((f64::from(logits[id as usize]) - f64::from(max)) * inv_temperature).exp();
        let rank = |a: &u32, b: &u32| by_rank(logits, *a, *b);

        ids.clear();
        ids.extend((0..logits.len() as u32).filter(|&id| logits[id as usize] > f32::NEG_INFINITY));

        let top_k = params.top_k;
        let cut_by_top_k = top_k > 0 && top_k < ids.len();
        if cut_by_top_k {
            ids.select_nth_unstable_by(top_k - 1, rank);
            ids.truncate(top_k);
        }
        if params.top_p < 1.0 {
            keep_nucleus(ids, f64::from(params.top_p), &rank, &weight);
        } else if cut_by_top_k {
            // Selection leaves them in an order of its own; draw in id order so the token a seed
            // gives does not hang on the selection algorithm.
            ids.sort_unstable();
        }

        // Every set above holds the best token, whose weight is 1: `mass` ≥ 1.
        let mass: f64 = ids.iter().map(|&id| weight(id)).sum();
        let target = rng.random::<f64>() * mass;
        let mut cumulative = 0.0;
        let mut chosen = 0;
        for &id in ids.iter() {
            chosen = id;
            cumulative += weight(id);
            if target < cumulative {
                break;
            }
        }
        // Falling off the end (rounding put `target` at the very top) leaves the last token.
        chosen
    }

    /// The `n` most likely tokens with their logprobs, best first; fewer when fewer are finite.
    fn top_logprobs(&mut self, n: usize, dist: &LogSoftmax) -> Vec<(u32, f32)> {
        let logits: &[f32] = &self.penalised;
        let ids = &mut self.ids;
        ids.clear();
        ids.extend((0..logits.len() as u32).filter(|&id| logits[id as usize] > f32::NEG_INFINITY));
        let rank = |a: &u32, b: &u32| by_rank(logits, *a, *b);
        if n < ids.len() {
            ids.select_nth_unstable_by(n - 1, rank);
            ids.truncate(n);
        }
        ids.sort_unstable_by(rank);
        ids.iter().map(|&id| (id, dist.logprob(logits[id as usize]))).collect()
    }
}

/// The log-softmax of a step's logits, held as its normaliser.
struct LogSoftmax {
    max: f32,
    /// ln Σ exp(x), summed in f64 (49k terms in f32 lose digits).
    log_norm: f64,
}

impl LogSoftmax {
    /// `None` when no logit is finite (NaN must already read as -inf).
    fn over(logits: &[f32]) -> Option<Self> {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return None;
        }
        let sum: f64 = logits.iter().map(|&x| (f64::from(x) - f64::from(max)).exp()).sum();
        Some(LogSoftmax { max, log_norm: f64::from(max) + sum.ln() })
    }

    fn logprob(&self, logit: f32) -> f32 {
        (f64::from(logit) - self.log_norm) as f32
    }
}

/// Higher logit first, then lower id: a total order, so every ranking here is deterministic.
fn by_rank(logits: &[f32], a: u32, b: u32) -> Ordering {
    let (xa, xb) = (logits[a as usize], logits[b as usize]);
    // No NaN reaches here (read as -inf), so `None` cannot happen; -0.0 and 0.0 tie, as they should.
    xb.partial_cmp(&xa).unwrap_or(Ordering::Equal).then(a.cmp(&b))
}

/// The index of the largest logit, the lowest one on a tie. `logits` is non-empty.
fn argmax_lowest_id(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (id, &x) in logits.iter().enumerate().skip(1) {
        if x > logits[best] {
            best = id;
        }
    }
    best as u32
}

/// Cuts `ids` to the nucleus: the smallest set of highest-ranked tokens whose share of the total
/// `weight` reaches `top_p` (never empty), left in rank order. It ranks only the best
/// [`NUCLEUS_FIRST_GUESS`] at first and widens eightfold while their mass falls short, so a
/// peaked distribution costs one O(V) selection instead of an O(V log V) sort.
fn keep_nucleus(ids: &mut Vec<u32>, top_p: f64, rank: &impl Fn(&u32, &u32) -> Ordering, weight: &impl Fn(u32) -> f64) {
    let total: f64 = ids.iter().map(|&id| weight(id)).sum();
    let threshold = (top_p - TOP_P_SLACK) * total;
    let n = ids.len();
    let mut m = n.min(NUCLEUS_FIRST_GUESS);
    loop {
        if m < n {
            ids.select_nth_unstable_by(m - 1, rank);
        }
        ids[..m].sort_unstable_by(rank);
        let mut cumulative = 0.0;
        for (i, &id) in ids[..m].iter().enumerate() {
            cumulative += weight(id);
            if cumulative >= threshold {
                ids.truncate(i + 1);
                return;
            }
        }
        if m == n {
            // Rounding left even the whole set a hair short of the threshold: keep it all.
            return;
        }
        m = n.min(m * 8);
    }
}

/// What [`StopScanner::push`] lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopStep {
    /// Text safe to send now: it cannot be part of a stop sequence.
    pub emit: String,
    /// A stop sequence appeared: `emit` is everything before it, and generation should end.
    pub stopped: bool,
}

/// Watches streamed text for OpenAI `stop` sequences. It holds back the end of the text while it
/// could still be the start of a stop sequence, so a stop split across tokens is never half sent,
/// and it never sends the stop sequence itself (as OpenAI does not).
#[derive(Debug, Clone)]
pub struct StopScanner {
    stops: Vec<String>,
    /// Text received but not yet emitted: at most the longest stop's length, less one byte.
    pending: String,
    stopped: bool,
}

impl StopScanner {
    /// At most [`MAX_STOPS`] sequences, none empty (an empty one would match before any text).
    pub fn new(stops: Vec<String>) -> Result<Self, InvalidSampling> {
        if stops.len() > MAX_STOPS {
            return Err(InvalidSampling::new("stop", format!("{} sequences given, at most {MAX_STOPS} are allowed", stops.len())));
        }
        if let Some(i) = stops.iter().position(|s| s.is_empty()) {
            return Err(InvalidSampling::new("stop", format!("sequence {i} is empty; an empty stop would end every completion at once")));
        }
        Ok(StopScanner { stops, pending: String::new(), stopped: false })
    }

    /// Takes the next piece of decoded text. After a stop, every later call emits nothing and
    /// says `stopped`.
    pub fn push(&mut self, piece: &str) -> StopStep {
        if self.stopped {
            return StopStep { emit: String::new(), stopped: true };
        }
        self.pending.push_str(piece);

        // The earliest occurrence of any stop wins; `pending` never holds a complete stop from an
        // earlier call, so a match here always involves the new piece.
        let earliest = self.stops.iter().filter_map(|stop| self.pending.find(stop.as_str())).min();
        if let Some(at) = earliest {
            self.pending.truncate(at);
            self.stopped = true;
            return StopStep { emit: std::mem::take(&mut self.pending), stopped: true };
        }

        let held = self.stops.iter().map(|stop| longest_suffix_prefix(&self.pending, stop)).max().unwrap_or(0);
        let kept = self.pending.split_off(self.pending.len() - held);
        StopStep { emit: std::mem::replace(&mut self.pending, kept), stopped: false }
    }

    /// Whether a stop sequence has been seen (the text ended before it).
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The text still held back, at the end of generation (empty after a stop).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// The length of the longest proper prefix of `stop` that `text` ends with (0 if none), on
/// character boundaries of both.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let longest = text.len().min(stop.len().saturating_sub(1));
    (1..=longest)
        .rev()
        .find(|&len| stop.is_char_boundary(len) && text.is_char_boundary(text.len() - len) && text.ends_with(&stop[..len]))
        .unwrap_or(0)
}

/// The length of the longest prefix of `bytes` that does not end inside a UTF-8 character: the
/// caller decodes that much and keeps the rest until the next token's bytes complete it (a
/// byte-level BPE token may carry part of a character, e.g. the first two of an emoji's four
/// bytes). Bytes that can never complete a character (a stray continuation byte, a byte that is
/// no UTF-8 lead) are not held back; the caller's lossy decode shows them as U+FFFD. At the end
/// of generation the caller flushes whatever is left the same way.
pub fn utf8_complete_prefix(bytes: &[u8]) -> usize {
    let len = bytes.len();
    // A character is at most 4 bytes, so only the last 3 can be an unfinished one's.
    for start in (len.saturating_sub(3)..len).rev() {
        let byte = bytes[start];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: the character began further back
        }
        let char_len = match byte {
            0x00..=0x7F => 1,
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return len, // not a lead byte of any valid character: nothing to wait for
        };
        return if len - start < char_len { start } else { len };
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(params: SamplingParams) -> Sampler {
        Sampler::new(params).expect("test parameters are valid")
    }

    fn greedy() -> SamplingParams {
        SamplingParams { temperature: 0.0, ..SamplingParams::default() }
    }

    fn close(a: f32, b: f64, tol: f64) -> bool {
        (f64::from(a) - b).abs() <= tol
    }

    #[test]
    fn greedy_takes_the_lower_id_on_a_tie() {
        let mut s = sampler(greedy());
        let out = s.sample(&[0.5, 3.0, -1.0, 3.0, 2.9], &[]).unwrap();
        assert_eq!(out.token, 1);
        // Ties at the very first id too: the strict comparison must not let a later equal win.
        let out = s.sample(&[7.0, 7.0, 7.0], &[]).unwrap();
        assert_eq!(out.token, 0);
    }

    #[test]
    fn greedy_draws_nothing_from_the_random_stream() {
        // Interleaving greedy steps must not shift the draws of a sampler with the same seed.
        let params = SamplingParams { seed: 9, ..SamplingParams::default() };
        let logits = [0.1, 0.4, 0.2, 0.3, 0.0];
        let mut plain = sampler(params.clone());
        let expected: Vec<u32> = (0..20).map(|_| plain.sample(&logits, &[]).unwrap().token).collect();

        let mut mixed = sampler(params);
        let mut got = Vec::new();
        for _ in 0..20 {
            mixed.params.temperature = 0.0;
            mixed.sample(&logits, &[]).unwrap();
            mixed.params.temperature = 1.0;
            got.push(mixed.sample(&logits, &[]).unwrap().token);
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn repetition_penalty_follows_the_ctrl_rule_once_per_distinct_token() {
        // Hand-worked, penalty 2: token 0 (2.0 > 0) → 1.0; token 1 (-1.0) → -2.0; token 2 unseen;
        // token 0 appears twice but is penalised once; id 99 is outside the vocabulary.
        let mut s = sampler(SamplingParams { repetition_penalty: 2.0, ..greedy() });
        s.penalise(&[2.0, -1.0, 0.5, 3.0], &[0, 1, 0, 99]);
        assert_eq!(s.penalised, vec![1.0, -2.0, 0.5, 3.0]);

        // A positive logit divided: [3, 2] with 0 seen → [1.5, 2]: token 1 now wins.
        let out = s.sample(&[3.0, 2.0], &[0]).unwrap();
        assert_eq!(out.token, 1);
        // The logprob is of the penalised distribution: 2 - ln(e^1.5 + e^2) (worked in Python).
        assert!(close(out.logprob, -0.474_076_984_180_106_9, 1e-6), "{}", out.logprob);

        // A negative logit multiplied: [-1, -1.5] with 0 seen → [-2, -1.5]: token 1 wins.
        assert_eq!(s.sample(&[-1.0, -1.5], &[0]).unwrap().token, 1);

        // Penalised twice, [3, 1] would give 0.75 < 1 and pick token 1; once gives 1.5.
        assert_eq!(s.sample(&[3.0, 1.0], &[0, 0]).unwrap().token, 0);
    }

    #[test]
    fn top_k_of_one_is_greedy_for_any_seed() {
        let logits = [0.3, 1.2, -0.7, 1.19, 0.0, 1.2];
        for seed in 0..50 {
            let mut s = sampler(SamplingParams { top_k: 1, seed, temperature: 1.7, ..SamplingParams::default() });
            for _ in 0..5 {
                assert_eq!(s.sample(&logits, &[]).unwrap().token, 1, "seed {seed}");
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens_and_another_seed_others() {
        let logits = [0.0f32; 10]; // uniform: each draw is one of 10 equally likely tokens
        let draws = |seed| {
            let mut s = sampler(SamplingParams { seed, ..SamplingParams::default() });
            (0..50).map(|_| s.sample(&logits, &[]).unwrap().token).collect::<Vec<_>>()
        };
        let first = draws(1234);
        assert_eq!(first, draws(1234));
        // Two seeds agreeing on all 50 draws has probability 10^-50.
        assert_ne!(first, draws(1235));
        // And the draws are not stuck on one token.
        assert!(first.iter().any(|&t| t != first[0]));
    }

    /// Draws `n` tokens and checks each token's count against `expected` probabilities within 5
    /// binomial standard deviations (sqrt(n p (1 - p))): a correct sampler fails that with
    /// probability under 1e-6 per token, and the fixed seed makes the outcome reproducible.
    fn assert_frequencies(params: SamplingParams, logits: &[f32], expected: &[f64]) {
        let n = 20_000;
        let mut s = sampler(params);
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..n {
            counts[s.sample(logits, &[]).unwrap().token as usize] += 1;
        }
        for (token, (&count, &p)) in counts.iter().zip(expected).enumerate() {
            let mean = n as f64 * p;
            let sigma = (n as f64 * p * (1.0 - p)).sqrt();
            if p == 0.0 {
                assert_eq!(count, 0, "token {token} has probability 0 but was drawn");
            } else {
                assert!((count as f64 - mean).abs() <= 5.0 * sigma, "token {token}: {count} draws, expected {mean} ± {}", 5.0 * sigma);
            }
        }
    }

    #[test]
    fn draws_follow_the_softmax_at_temperature_one() {
        // Logits ln 2, ln 3, ln 5: probabilities 2/10, 3/10, 5/10.
        let logits = [2f32.ln(), 3f32.ln(), 5f32.ln()];
        assert_frequencies(SamplingParams { seed: 7, ..SamplingParams::default() }, &logits, &[0.2, 0.3, 0.5]);
    }

    #[test]
    fn draws_follow_the_sharpened_softmax_at_temperature_half() {
        // Dividing by 0.5 doubles the logits: ln 4, ln 9, ln 25 → 4/38, 9/38, 25/38.
        let logits = [2f32.ln(), 3f32.ln(), 5f32.ln()];
        let params = SamplingParams { temperature: 0.5, seed: 11, ..SamplingParams::default() };
        assert_frequencies(params, &logits, &[4.0 / 38.0, 9.0 / 38.0, 25.0 / 38.0]);
    }

    #[test]
    fn top_k_renormalises_over_the_kept_tokens() {
        // Probabilities .1 .2 .3 .4 (ids 0..3); top_k 2 keeps ids 3 and 2: 4/7, 3/7.
        let logits = [1f32.ln(), 2f32.ln(), 3f32.ln(), 4f32.ln()];
        let params = SamplingParams { top_k: 2, seed: 3, ..SamplingParams::default() };
        assert_frequencies(params, &logits, &[0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0]);
    }

    /// Probabilities 0.05, 0.5, 0.15, 0.3 (ids out of rank order on purpose): in rank order the
    /// cumulative mass is 0.5, 0.8, 0.95, 1.0.
    fn nucleus_logits() -> [f32; 4] {
        [0.05f32.ln(), 0.5f32.ln(), 0.15f32.ln(), 0.3f32.ln()]
    }

    fn nucleus_of(top_p: f32) -> Vec<u32> {
        let mut s = sampler(SamplingParams { top_p, ..SamplingParams::default() });
        let logits = nucleus_logits();
        s.penalise(&logits, &[]);
        let logits = &s.penalised;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
        keep_nucleus(&mut ids, f64::from(top_p), &|a: &u32, b: &u32| by_rank(logits, *a, *b), &|id: u32| {
            (f64::from(logits[id as usize]) - f64::from(max)).exp()
        });
        ids
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_it() {
        assert_eq!(nucleus_of(0.8), vec![1, 3], "0.5 + 0.3 reaches 0.8 exactly");
        assert_eq!(nucleus_of(0.81), vec![1, 3, 2]);
        assert_eq!(nucleus_of(0.4), vec![1], "the best token alone already exceeds it");
        assert_eq!(nucleus_of(0.01), vec![1]);
        assert_eq!(nucleus_of(0.999), vec![1, 3, 2, 0]);
    }

    #[test]
    fn top_p_draws_renormalise_over_the_nucleus() {
        // top_p 0.8 keeps ids 1 and 3: 0.5/0.8 and 0.3/0.8.
        let params = SamplingParams { top_p: 0.8, seed: 5, ..SamplingParams::default() };
        assert_frequencies(params, &nucleus_logits(), &[0.0, 0.625, 0.0, 0.375]);
    }

    #[test]
    fn top_p_widens_past_its_first_guess_on_a_flat_distribution() {
        // 1000 equal tokens: top_p 0.5 needs exactly 500, more than the first 64 it ranks; ties
        // rank by id, so the nucleus is ids 0..500 and every draw lands there.
        let logits = vec![0.0f32; 1000];
        let mut s = sampler(SamplingParams { top_p: 0.5, seed: 2, ..SamplingParams::default() });
        let mut seen_high = false;
        for _ in 0..2000 {
            let t = s.sample(&logits, &[]).unwrap().token;
            assert!(t < 500, "token {t} is outside the nucleus");
            seen_high |= t >= 64;
        }
        assert!(seen_high, "the nucleus stopped at the first guess of 64");
    }

    #[test]
    fn logprob_is_the_log_softmax_of_the_raw_logits() {
        // ln softmax([1, 2, 3]) = [-2.4076, -1.4076, -0.4076] (worked in Python).
        let mut s = sampler(greedy());
        let out = s.sample(&[1.0, 2.0, 3.0], &[]).unwrap();
        assert_eq!(out.token, 2);
        assert!(close(out.logprob, -0.407_605_964_444_380_1, 1e-6), "{}", out.logprob);
        assert!(out.top.is_empty());

        // Temperature, top-k and top-p do not change the reported logprob.
        let mut s = sampler(SamplingParams { temperature: 0.3, top_k: 1, top_p: 0.5, ..SamplingParams::default() });
        let out = s.sample(&[1.0, 2.0, 3.0], &[]).unwrap();
        assert_eq!(out.token, 2);
        assert!(close(out.logprob, -0.407_605_964_444_380_1, 1e-6), "{}", out.logprob);
    }

    #[test]
    fn top_logprobs_are_best_first_with_ties_by_id() {
        // ln softmax of [0, 2, 1, 2]: ids 1 and 3 at 2 - ln(1 + 2e^2 + e) = -0.91758, id 2 at
        // -1.91758, id 0 at -2.91758 (worked in Python).
        let mut s = sampler(SamplingParams { top_logprobs: Some(3), ..greedy() });
        let out = s.sample(&[0.0, 2.0, 1.0, 2.0], &[]).unwrap();
        let ids: Vec<u32> = out.top.iter().map(|&(id, _)| id).collect();
        assert_eq!(ids, vec![1, 3, 2]);
        let expected = [-0.917_575_795_589_197_4, -0.917_575_795_589_197_4, -1.917_575_795_589_197_4];
        for (&(_, lp), want) in out.top.iter().zip(expected) {
            assert!(close(lp, want, 1e-6), "{lp} vs {want}");
        }
        assert_eq!(out.top[0].1, out.logprob, "the chosen token's logprob is the first entry's");

        // Asking for more than there are finite tokens reports the finite ones only.
        let mut s = sampler(SamplingParams { top_logprobs: Some(5), ..greedy() });
        let out = s.sample(&[f32::NEG_INFINITY, 1.0, f32::NAN], &[]).unwrap();
        assert_eq!(out.top, vec![(1, 0.0)]);
    }

    #[test]
    fn nan_logits_are_never_chosen() {
        let mut s = sampler(greedy());
        let out = s.sample(&[f32::NAN, 1.0, f32::NAN, 0.5], &[]).unwrap();
        assert_eq!(out.token, 1);

        let mut s = sampler(SamplingParams { seed: 4, temperature: 2.0, ..SamplingParams::default() });
        for _ in 0..500 {
            let out = s.sample(&[f32::NAN, 0.0, f32::NAN, 0.0], &[1]).unwrap();
            assert!(out.token == 1 || out.token == 3, "drew NaN token {}", out.token);
            assert!(out.logprob.is_finite());
        }
    }

    #[test]
    fn an_infinite_logit_takes_all_the_mass() {
        let mut s = sampler(SamplingParams { seed: 1, ..SamplingParams::default() });
        for _ in 0..100 {
            let out = s.sample(&[5.0, f32::INFINITY, 7.0], &[]).unwrap();
            assert_eq!(out.token, 1);
            assert_eq!(out.logprob, 0.0);
        }
    }

    #[test]
    fn no_finite_logit_is_an_error_not_a_panic() {
        for params in [greedy(), SamplingParams::default(), SamplingParams { top_p: 0.5, top_k: 2, ..SamplingParams::default() }] {
            let mut s = sampler(params);
            assert_eq!(s.sample(&[f32::NAN, f32::NEG_INFINITY], &[0]), Err(SamplingError::NoFiniteLogits { vocab: 2 }));
            assert_eq!(s.sample(&[], &[]), Err(SamplingError::NoFiniteLogits { vocab: 0 }));
        }
    }

    #[test]
    fn validate_names_the_field_at_fault() {
        let field = |p: SamplingParams| p.validate().err().map(|e| e.field);
        let d = SamplingParams::default;
        assert_eq!(field(d()), None);
        assert_eq!(field(SamplingParams { temperature: 0.0, top_p: 1.0, top_k: MAX_TOP_K, repetition_penalty: 10.0, top_logprobs: Some(20), ..d() }), None);
        assert_eq!(field(SamplingParams { temperature: -0.1, ..d() }), Some("temperature"));
        assert_eq!(field(SamplingParams { temperature: 2.01, ..d() }), Some("temperature"));
        assert_eq!(field(SamplingParams { temperature: f32::NAN, ..d() }), Some("temperature"));
        assert_eq!(field(SamplingParams { top_p: 0.0, ..d() }), Some("top_p"));
        assert_eq!(field(SamplingParams { top_p: 1.5, ..d() }), Some("top_p"));
        assert_eq!(field(SamplingParams { top_p: f32::NAN, ..d() }), Some("top_p"));
        assert_eq!(field(SamplingParams { top_k: MAX_TOP_K + 1, ..d() }), Some("top_k"));
        assert_eq!(field(SamplingParams { repetition_penalty: 0.0, ..d() }), Some("repetition_penalty"));
        assert_eq!(field(SamplingParams { repetition_penalty: f32::INFINITY, ..d() }), Some("repetition_penalty"));
        assert_eq!(field(SamplingParams { top_logprobs: Some(21), ..d() }), Some("top_logprobs"));
        assert!(Sampler::new(SamplingParams { top_p: 0.0, ..d() }).is_err());
        let message = SamplingParams { top_p: 0.0, ..d() }.validate().unwrap_err().to_string();
        assert!(message.contains("`top_p`"), "{message}");
    }

    fn scanner(stops: &[&str]) -> StopScanner {
        StopScanner::new(stops.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    fn step(emit: &str, stopped: bool) -> StopStep {
        StopStep { emit: emit.to_string(), stopped }
    }

    #[test]
    fn a_stop_split_across_pieces_is_caught_and_not_emitted() {
        let mut s = scanner(&["STOP"]);
        assert_eq!(s.push("Hel"), step("Hel", false));
        // "lo ST": "ST" could start "STOP", so it waits.
        assert_eq!(s.push("lo ST"), step("lo ", false));
        assert_eq!(s.push("OP more"), step("", true));
        assert_eq!(s.push("anything"), step("", true));
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn held_back_text_is_released_when_it_turns_out_not_to_be_a_stop() {
        let mut s = scanner(&["STOP"]);
        assert_eq!(s.push("a STO"), step("a ", false));
        assert_eq!(s.push("RM"), step("STORM", false));
        // Held back again, then the generation ends: `finish` hands it over.
        assert_eq!(s.push(" S"), step(" ", false));
        assert_eq!(s.finish(), "S");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn the_earliest_of_two_stops_wins() {
        // "END" appears later in the text than "\n\n" even though it is listed first.
        let mut s = scanner(&["END", "\n\n"]);
        assert_eq!(s.push("one\n\ntwo END"), step("one", true));

        // Across pieces: "\n" is held (could start "\n\n"), then the next piece completes it
        // before the "END" that follows.
        let mut s = scanner(&["END", "\n\n"]);
        assert_eq!(s.push("x\n"), step("x", false));
        assert_eq!(s.push("\nEND"), step("", true));
    }

    #[test]
    fn a_stop_ends_within_one_piece() {
        let mut s = scanner(&["</s>"]);
        assert_eq!(s.push("done</s>trailing"), step("done", true));
    }

    #[test]
    fn hold_back_respects_multibyte_characters() {
        // The stop starts with "é" (2 bytes): a trailing "é" is held, a trailing "e" is not.
        let mut s = scanner(&["éclair"]);
        assert_eq!(s.push("café"), step("caf", false));
        assert_eq!(s.push("e"), step("ée", false));
        assert_eq!(s.push(" éclair!"), step(" ", true));
    }

    #[test]
    fn stop_lists_are_validated() {
        let err = StopScanner::new(vec!["a".into(), String::new()]).unwrap_err();
        assert_eq!(err.field, "stop");
        let err = StopScanner::new((0..5).map(|i| i.to_string()).collect()).unwrap_err();
        assert_eq!(err.field, "stop");
        assert!(StopScanner::new(Vec::new()).is_ok());
        let mut none = StopScanner::new(Vec::new()).unwrap();
        assert_eq!(none.push("anything"), step("anything", false));
    }

    #[test]
    fn utf8_prefix_holds_back_a_split_emoji() {
        // "a😀" = 61 F0 9F 98 80: cut after each byte, only the whole emoji completes it.
        let bytes = "a😀".as_bytes();
        assert_eq!(bytes, &[0x61, 0xF0, 0x9F, 0x98, 0x80]);
        assert_eq!(utf8_complete_prefix(&bytes[..1]), 1);
        assert_eq!(utf8_complete_prefix(&bytes[..2]), 1);
        assert_eq!(utf8_complete_prefix(&bytes[..3]), 1);
        assert_eq!(utf8_complete_prefix(&bytes[..4]), 1);
        assert_eq!(utf8_complete_prefix(bytes), 5);
        assert_eq!(utf8_complete_prefix(&[]), 0);

        // Streaming pieces that split two emoji and a 3-byte char: the decoded stream is whole.
        let text = "hi 😀👍 €!";
        let raw = text.as_bytes();
        let pieces = [&raw[..4], &raw[4..6], &raw[6..9], &raw[9..13], &raw[13..]];
        let mut pending = Vec::new();
        let mut out = String::new();
        for piece in pieces {
            pending.extend_from_slice(piece);
            let cut = utf8_complete_prefix(&pending);
            out.push_str(std::str::from_utf8(&pending[..cut]).expect("the prefix is whole characters"));
            pending.drain(..cut);
        }
        assert!(pending.is_empty());
        assert_eq!(out, text);
    }

    #[test]
    fn utf8_prefix_does_not_wait_on_bytes_that_can_never_complete() {
        // A lone continuation byte, and 0xFF (never in UTF-8): nothing to hold back.
        assert_eq!(utf8_complete_prefix(&[0x61, 0x80]), 2);
        assert_eq!(utf8_complete_prefix(&[0x61, 0xFF]), 2);
        // A complete 2-byte char followed by the lead of a 3-byte one: hold back the lead only.
        assert_eq!(utf8_complete_prefix(&[0xC3, 0xA9, 0xE2]), 2);
        assert_eq!(utf8_complete_prefix(&[0xC3, 0xA9, 0xE2, 0x82]), 2);
        assert_eq!(utf8_complete_prefix(&[0xC3, 0xA9, 0xE2, 0x82, 0xAC]), 5);
    }
}
