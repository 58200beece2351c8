//! Unrolling of WGSL register blocks: expands `//#unroll VAR COUNT` … `//#end` sections of a
//! kernel source into COUNT copies with `{VAR}` replaced by 0, 1, …, and `{COUNT}` names by
//! their values everywhere.
//!
//! Why: on CPU adapters (lavapipe) a kernel's speed is set by how many values each loaded
//! element feeds, so register blocks must be large (16×16 accumulators per invocation), and
//! they must be named scalars: Mesa's NIR leaves loops over register arrays of that size rolled
//! and then keeps the array in memory (measured on lavapipe, Mesa 22.3: an 8×8 block written as
//! loops ran at 1.15 GFLOP/s, the same block unrolled at 2.01). WGSL has no templates, so the
//! `.wgsl` file keeps one copy of each line and marks what repeats.

use crate::error::{KernelError, Result};

/// Expands `source` with `counts` (name → value). Sections nest; an unknown count name, a
/// missing `//#end` or a stray one is an error naming the line (a kernel bug, caught by the
/// first test that compiles the kernel).
pub(crate) fn expand(source: &str, counts: &[(&str, usize)]) -> Result<String> {
    let lines: Vec<&str> = source.lines().collect();
    let mut out = String::with_capacity(source.len() * 4);
    let mut at = 0;
    expand_lines(&lines, &mut at, counts, &mut Vec::new(), &mut out)?;
    if at < lines.len() {
        return Err(template_error(at, "`//#end` without a matching `//#unroll`"));
    }
    Ok(out)
}

/// Expands from `lines[*at]` until the `//#end` closing the current section (or the end).
fn expand_lines(
    lines: &[&str],
    at: &mut usize,
    counts: &[(&str, usize)],
    bound: &mut Vec<(String, usize)>,
    out: &mut String,
) -> Result<()> {
    while *at < lines.len() {
        let line = lines[*at];
        let directive = line.trim_start();
        if directive.starts_with("//#end") {
            return Ok(());
        }
        if let Some(rest) = directive.strip_prefix("//#unroll") {
            let mut words = rest.split_whitespace();
            let (Some(var), Some(count_name), None) = (words.next(), words.next(), words.next()) else {
                return Err(template_error(*at, "expected `//#unroll VAR COUNT`"));
            };
            let count = lookup(counts, count_name).ok_or_else(|| template_error(*at, &format!("unknown count `{count_name}`")))?;
            let start = *at + 1;
            for i in 0..count.max(1) {
                *at = start;
                bound.push((var.to_string(), i));
                let mut body = String::new();
                expand_lines(lines, at, counts, bound, &mut body)?;
                bound.pop();
                if count > 0 {
                    out.push_str(&body);
                }
            }
            if *at >= lines.len() {
                return Err(template_error(start - 1, "`//#unroll` without a matching `//#end`"));
            }
            *at += 1; // past `//#end`
            continue;
        }
        out.push_str(&substitute(line, counts, bound));
        out.push('\n');
        *at += 1;
    }
    Ok(())
}

fn lookup(counts: &[(&str, usize)], name: &str) -> Option<usize> {
    counts.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
}

/// Replaces `{VAR}` for every bound variable and `{COUNT}` for every count.
fn substitute(line: &str, counts: &[(&str, usize)], bound: &[(String, usize)]) -> String {
    if !line.contains('{') {
        return line.to_string();
    }
    let mut s = line.to_string();
    for (var, value) in bound {
        s = s.replace(&format!("{{{var}}}"), &value.to_string());
    }
    for (name, value) in counts {
        s = s.replace(&format!("{{{name}}}"), &value.to_string());
    }
    s
}

fn template_error(line: usize, reason: &str) -> KernelError {
    KernelError::InvalidArgument {
        op: "unroll",
        what: "kernel template",
        reason: format!("line {}: {reason}", line + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn nested_sections_expand_in_order() {
        let src = "a {R}\n//#unroll i R\n  x{i}\n  //#unroll j C\n  y{i}_{j}\n  //#end\n//#end\nz\n";
        let got = expand(src, &[("R", 2), ("C", 3)]).unwrap();
        assert_eq!(got, "a 2\n  x0\n  y0_0\n  y0_1\n  y0_2\n  x1\n  y1_0\n  y1_1\n  y1_2\nz\n");
    }

    #[test]
    fn zero_count_emits_nothing() {
        assert_eq!(expand("//#unroll i N\nx{i}\n//#end\nend\n", &[("N", 0)]).unwrap(), "end\n");
    }

    #[test]
    fn malformed_templates_name_the_line() {
        let missing_end = expand("ok\n//#unroll i N\nx\n", &[("N", 2)]).unwrap_err().to_string();
        assert!(missing_end.contains("line 2"), "{missing_end}");
        let stray_end = expand("ok\n//#end\n", &[]).unwrap_err().to_string();
        assert!(stray_end.contains("line 2"), "{stray_end}");
        let unknown = expand("//#unroll i M\n//#end\n", &[("N", 1)]).unwrap_err().to_string();
        assert!(unknown.contains("unknown count `M`"), "{unknown}");
    }
}
