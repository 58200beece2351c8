// Shared declarations, prepended to every kernel by its launcher (WGSL has no #include).

// The lowest finite f32, used as -infinity (WGSL has no infinity literal).
const NEG_INF: f32 = -3.40282347e38;

// Linear index of this invocation in a 1-D problem dispatched as a 2-D grid of `wg_size`-wide
// workgroups (a dimension holds at most 65535 workgroups).
fn linear_index(wid: vec3<u32>, num_groups: vec3<u32>, lid: u32, wg_size: u32) -> u32 {
    return (wid.y * num_groups.x + wid.x) * wg_size + lid;
}

// erf by Abramowitz & Stegun 7.1.26, |error| < 1.5e-7 (WGSL has no erf).
fn erf_approx(x: f32) -> f32 {
    let s = sign(x);
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return s * (1.0 - poly * exp(-a * a));
}

// GELU in the erf form, as BERT uses it: x * Φ(x).
fn gelu_erf(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752));
}

// SiLU (swish): x * sigmoid(x). For very negative x, exp overflows to +inf and the result is -0.
fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}
