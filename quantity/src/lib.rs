//! Kubernetes resource quantities ("500m", "128Mi", "1e3", "2") as exact integers, shared by the
//! kubelet and the scheduler.

/// The value of `q` in thousandths ("500m" -> 500, "2" -> 2000, "1Ki" -> 1_024_000), rounded up
/// as upstream rounds fractional milli-values. `None` for text that is not a quantity.
pub fn parse_milli(q: &str) -> Option<i128> {
    let q = q.trim();
    if q.is_empty() {
        return None;
    }
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let (mantissa_scale, exp10): (i128, i32) = match suffix {
        "" => (1, 0),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        s if s.starts_with(['e', 'E']) => (1, s[1..].parse().ok()?),
        _ => return None,
    };
    let negative = number.starts_with('-');
    let digits = number.trim_start_matches(['+', '-']);
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.chars().chain(frac_part.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    // value = (int.frac) * scale * 10^exp10 * 1000, computed as a fraction num/den.
    let mut num: i128 = format!("{int_part}{frac_part}").parse().unwrap_or(0);
    let mut den: i128 = 10i128.checked_pow(frac_part.len() as u32)?;
    num = num.checked_mul(mantissa_scale)?.checked_mul(1000)?;
    if exp10 >= 0 {
        num = num.checked_mul(10i128.checked_pow(exp10 as u32)?)?;
    } else {
        den = den.checked_mul(10i128.checked_pow((-exp10) as u32)?)?;
    }
    let value = (num + den - 1) / den;
    Some(if negative { -value } else { value })
}

/// The value in whole units, rounded up ("1500m" -> 2, "128Mi" -> 134217728).
pub fn parse_units(q: &str) -> Option<i128> {
    parse_milli(q).map(|m| (m + 999).div_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_exactly() {
        assert_eq!(parse_milli("500m"), Some(500));
        assert_eq!(parse_milli("2"), Some(2000));
        assert_eq!(parse_milli("0.5"), Some(500));
        assert_eq!(parse_milli("1Ki"), Some(1_024_000));
        assert_eq!(parse_units("128Mi"), Some(128 << 20));
        assert_eq!(parse_units("1G"), Some(1_000_000_000));
        assert_eq!(parse_units("1e3"), Some(1000));
        assert_eq!(parse_units("1500m"), Some(2));
        assert_eq!(parse_milli("0.1m"), Some(1));
        assert_eq!(parse_milli("abc"), None);
        assert_eq!(parse_milli("1Zi"), None);
        assert_eq!(parse_milli(""), None);
    }
}
