//! Kubernetes resource quantities (apimachinery `pkg/api/resource`): parsing with upstream's
//! errors, exact comparison and the canonical string form the API server writes back.

use std::cmp::Ordering;
use std::fmt;

/// The notation a quantity was written in; it decides how the canonical form is spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityFormat {
    /// `1e3`, `5E-2`.
    DecimalExponent,
    /// `5Gi`, `128Mi`.
    BinarySI,
    /// `500m`, `1k`, `12`.
    DecimalSI,
}

/// Why a string is not a quantity; the texts are upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    FormatWrong,
    #[error("unable to parse numeric part of quantity")]
    Numeric,
    #[error("unable to parse quantity's suffix")]
    Suffix,
}

/// An exact decimal value `unscaled * 10^exponent` with the notation it was written in.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    unscaled: i128,
    exponent: i32,
    pub format: QuantityFormat,
}

/// Smallest exponent kept: upstream rounds everything up to nano units.
const NANO: i32 = -9;

impl Quantity {
    pub fn zero() -> Self {
        Self { unscaled: 0, exponent: 0, format: QuantityFormat::DecimalSI }
    }

    pub fn is_negative(&self) -> bool {
        self.unscaled < 0
    }

    pub fn is_zero(&self) -> bool {
        self.unscaled == 0
    }

    /// Whether the value has no fractional part.
    pub fn is_integer(&self) -> bool {
        if self.exponent >= 0 || self.unscaled == 0 {
            return true;
        }
        let (_, exp) = strip_factor(self.unscaled, 10);
        self.exponent + exp as i32 >= 0
    }

    /// The value in milli-units, rounded up, saturating (upstream `MilliValue`).
    pub fn milli_value(&self) -> i128 {
        scaled_round_up(self.unscaled, self.exponent, -3)
    }

    /// The value in whole units, rounded up, saturating (upstream `Value`).
    pub fn value(&self) -> i128 {
        scaled_round_up(self.unscaled, self.exponent, 0)
    }

    /// The canonical spelling (`1Gi`, `500m`, `1k`), as upstream's `Quantity.String()`.
    pub fn canonical(&self) -> String {
        if self.unscaled == 0 {
            return "0".to_owned();
        }
        let mut format = self.format;
        if format == QuantityFormat::BinarySI {
            // Small or fractional binary values are shown in decimal to avoid rounding.
            if self.abs_lt_1024() || !self.is_integer() {
                format = QuantityFormat::DecimalSI;
            }
        }
        match format {
            QuantityFormat::BinarySI => {
                let whole = to_integer(self.unscaled, self.exponent);
                let (mantissa, times) = strip_factor(whole, 1024);
                let suffix = match times {
                    0 => "",
                    1 => "Ki",
                    2 => "Mi",
                    3 => "Gi",
                    4 => "Ti",
                    5 => "Pi",
                    _ => "Ei",
                };
                // Above Ei the remaining factors stay in the mantissa.
                let mantissa = if times > 6 { mantissa * 1024i128.pow(times - 6) } else { mantissa };
                format!("{mantissa}{suffix}")
            }
            QuantityFormat::DecimalSI | QuantityFormat::DecimalExponent => {
                let (mut mantissa, times) = strip_factor(self.unscaled, 10);
                let mut exponent = self.exponent + times as i32;
                match exponent.rem_euclid(3) {
                    1 => {
                        mantissa *= 10;
                        exponent -= 1;
                    }
                    2 => {
                        mantissa *= 100;
                        exponent -= 2;
                    }
                    _ => {}
                }
                let suffix = if format == QuantityFormat::DecimalExponent {
                    if exponent == 0 { String::new() } else { format!("e{exponent}") }
                } else {
                    match exponent {
                        -9 => "n".to_owned(),
                        -6 => "u".to_owned(),
                        -3 => "m".to_owned(),
                        0 => String::new(),
                        3 => "k".to_owned(),
                        6 => "M".to_owned(),
                        9 => "G".to_owned(),
                        12 => "T".to_owned(),
                        15 => "P".to_owned(),
                        18 => "E".to_owned(),
                        other => format!("e{other}"),
                    }
                };
                format!("{mantissa}{suffix}")
            }
        }
    }

    /// The exact sum, keeping this quantity's notation (upstream `Add`).
    pub fn add(&self, other: &Quantity) -> Option<Quantity> {
        let exp = self.exponent.min(other.exponent);
        let a = rescale(self.unscaled, self.exponent - exp)?;
        let b = rescale(other.unscaled, other.exponent - exp)?;
        let (unscaled, exponent) = normalize(a.checked_add(b)?, exp);
        Some(Quantity { unscaled, exponent, format: self.format })
    }

    /// Rounds up to milli units, as upstream's `SetDefaults_ResourceList` does.
    pub fn round_up_milli(&self) -> Quantity {
        if self.exponent >= -3 {
            return *self;
        }
        let unscaled = scaled_round_up(self.unscaled, self.exponent, -3);
        let (unscaled, exponent) = if unscaled == 0 { (0, 0) } else { (unscaled, -3) };
        Quantity { unscaled, exponent, format: self.format }
    }

    fn abs_lt_1024(&self) -> bool {
        self.cmp_value(&Quantity { unscaled: 1024, exponent: 0, format: self.format }) == Ordering::Less
            && self.cmp_value(&Quantity { unscaled: -1024, exponent: 0, format: self.format }) == Ordering::Greater
    }

    /// Numeric comparison, ignoring notation.
    pub fn cmp_value(&self, other: &Quantity) -> Ordering {
        let exp = self.exponent.min(other.exponent);
        let a = rescale(self.unscaled, self.exponent - exp);
        let b = rescale(other.unscaled, other.exponent - exp);
        match (a, b) {
            (Some(a), Some(b)) => a.cmp(&b),
            // One side overflowed while being aligned: it is the larger in magnitude.
            (None, Some(_)) => 0.cmp(&self.unscaled.signum()).reverse(),
            (Some(_), None) => 0.cmp(&other.unscaled.signum()),
            (None, None) => self.unscaled.signum().cmp(&other.unscaled.signum()),
        }
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_value(other) == Ordering::Equal
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_quantity(s)
    }
}

/// Parses a quantity string as upstream's `resource.ParseQuantity` does.
pub fn parse_quantity(s: &str) -> Result<Quantity, QuantityError> {
    if s.is_empty() {
        return Err(QuantityError::FormatWrong);
    }
    let parts = split_quantity(s)?;
    let (base_two, exponent, format) = interpret_suffix(parts.suffix).ok_or(QuantityError::Suffix)?;
    let digits = format!("{}{}", parts.whole, parts.fraction);
    let digits = digits.trim_start_matches('0');
    let mut unscaled: i128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| QuantityError::Numeric)? };
    let mut exp10 = -(parts.fraction.len() as i32);
    if base_two {
        let factor = 1i128.checked_shl(exponent as u32).ok_or(QuantityError::Numeric)?;
        unscaled = unscaled.checked_mul(factor).ok_or(QuantityError::Numeric)?;
    } else {
        exp10 = exp10.checked_add(exponent).ok_or(QuantityError::Numeric)?;
    }
    if !parts.positive {
        unscaled = -unscaled;
    }
    let (unscaled, exp10) = normalize(unscaled, exp10);
    let mut q = Quantity { unscaled, exponent: exp10, format };
    if format == QuantityFormat::BinarySI && !q.is_zero() && q.abs_lt_one() {
        q.format = QuantityFormat::DecimalSI;
    }
    Ok(q)
}

impl Quantity {
    fn abs_lt_one(&self) -> bool {
        let one = Quantity { unscaled: 1, exponent: 0, format: self.format };
        let minus_one = Quantity { unscaled: -1, exponent: 0, format: self.format };
        self.cmp_value(&one) == Ordering::Less && self.cmp_value(&minus_one) == Ordering::Greater
    }
}

struct QuantityParts<'a> {
    positive: bool,
    whole: &'a str,
    fraction: &'a str,
    suffix: &'a str,
}

/// Splits sign, number and suffix with upstream's scanner (`parseQuantityString`).
fn split_quantity(s: &str) -> Result<QuantityParts<'_>, QuantityError> {
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut positive = true;
    match bytes.first() {
        Some(b'-') => {
            positive = false;
            pos = 1;
        }
        Some(b'+') => pos = 1,
        _ => {}
    }
    let digits_end = |from: usize| from + bytes[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let whole_end = digits_end(pos);
    let whole = &s[pos..whole_end];
    pos = whole_end;
    let mut fraction = "";
    if bytes.get(pos) == Some(&b'.') {
        let end = digits_end(pos + 1);
        fraction = &s[pos + 1..end];
        pos = end;
    }
    let suffix_start = pos;
    while pos < bytes.len() && b"eEinumkKMGTP".contains(&bytes[pos]) {
        pos += 1;
    }
    if pos < bytes.len() && (bytes[pos] == b'-' || bytes[pos] == b'+') {
        pos += 1;
    }
    pos = digits_end(pos);
    if pos != bytes.len() {
        return Err(QuantityError::FormatWrong);
    }
    Ok(QuantityParts { positive, whole, fraction, suffix: &s[suffix_start..] })
}

/// (base is two, exponent, format) for a suffix.
fn interpret_suffix(suffix: &str) -> Option<(bool, i32, QuantityFormat)> {
    let decimal = |e| Some((false, e, QuantityFormat::DecimalSI));
    let binary = |e| Some((true, e, QuantityFormat::BinarySI));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let rest = suffix.strip_prefix('e').or_else(|| suffix.strip_prefix('E'))?;
            let exp: i32 = rest.parse().ok()?;
            Some((false, exp, QuantityFormat::DecimalExponent))
        }
    }
}

/// Rounds values finer than nano units up (away from zero), as upstream does.
fn normalize(unscaled: i128, exponent: i32) -> (i128, i32) {
    if unscaled == 0 {
        return (0, 0);
    }
    if exponent >= NANO {
        return (unscaled, exponent);
    }
    let drop = (NANO - exponent) as u32;
    let Some(divisor) = 10i128.checked_pow(drop) else {
        return (unscaled.signum(), NANO);
    };
    let mut q = unscaled / divisor;
    if unscaled % divisor != 0 {
        q += unscaled.signum();
    }
    (q, NANO)
}

/// Removes every factor `base` from `v`, returning the rest and how many were removed.
fn strip_factor(v: i128, base: i128) -> (i128, u32) {
    if v == 0 {
        return (0, 0);
    }
    let (mut v, mut n) = (v, 0);
    while v % base == 0 {
        v /= base;
        n += 1;
    }
    (v, n)
}

fn rescale(v: i128, up: i32) -> Option<i128> {
    10i128.checked_pow(up as u32).and_then(|f| v.checked_mul(f))
}

/// The integer value of `unscaled * 10^exponent` (callers check it is an integer).
fn to_integer(unscaled: i128, exponent: i32) -> i128 {
    if exponent >= 0 {
        rescale(unscaled, exponent).unwrap_or(if unscaled < 0 { i128::MIN } else { i128::MAX })
    } else {
        10i128.checked_pow((-exponent) as u32).map_or(0, |d| unscaled / d)
    }
}

/// `unscaled * 10^exponent` expressed in units of `10^target`, rounded up.
fn scaled_round_up(unscaled: i128, exponent: i32, target: i32) -> i128 {
    if exponent >= target {
        rescale(unscaled, exponent - target).unwrap_or(if unscaled < 0 { i128::MIN } else { i128::MAX })
    } else {
        match 10i128.checked_pow((target - exponent) as u32) {
            Some(d) => {
                let q = unscaled / d;
                if unscaled % d != 0 && unscaled > 0 { q + 1 } else { q }
            }
            None => i128::from(unscaled > 0),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        parse_quantity(s).unwrap().canonical()
    }

    #[test]
    fn canonical_forms_match_upstream() {
        for (input, want) in [
            ("0", "0"),
            ("1", "1"),
            ("1000", "1k"),
            ("1500", "1500"),
            ("1.5", "1500m"),
            ("0.1", "100m"),
            ("100m", "100m"),
            ("1000m", "1"),
            ("1500m", "1500m"),
            ("10k", "10k"),
            ("1Gi", "1Gi"),
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Ki", "512"),
            ("500Mi", "500Mi"),
            ("1e3", "1e3"),
            ("1E3", "1e3"),
            ("2048", "2048"),
            ("-1", "-1"),
            ("+5", "5"),
            ("1n", "1n"),
            ("0.0000000001", "1n"),
            ("12M", "12M"),
            ("007", "7"),
            (".5", "500m"),
        ] {
            assert_eq!(canon(input), want, "input {input}");
        }
    }

    #[test]
    fn errors_match_upstream() {
        assert_eq!(parse_quantity(""), Err(QuantityError::FormatWrong));
        assert_eq!(parse_quantity("abc"), Err(QuantityError::FormatWrong));
        assert_eq!(parse_quantity("1.5x"), Err(QuantityError::FormatWrong));
        assert_eq!(parse_quantity("5K"), Err(QuantityError::Suffix));
        assert_eq!(parse_quantity("5Mb"), Err(QuantityError::FormatWrong));
        assert_eq!(
            QuantityError::FormatWrong.to_string(),
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
    }

    #[test]
    fn comparison_is_numeric() {
        let q = |s| parse_quantity(s).unwrap();
        assert_eq!(q("1").cmp_value(&q("1000m")), Ordering::Equal);
        assert_eq!(q("500m").cmp_value(&q("1")), Ordering::Less);
        assert_eq!(q("1Gi").cmp_value(&q("1G")), Ordering::Greater);
        assert_eq!(q("128Mi").milli_value(), 128 * 1024 * 1024 * 1000);
        assert_eq!(q("100m").value(), 1);
        assert!(q("2").is_integer());
        assert!(!q("1.5").is_integer());
        assert!(q("-1").is_negative());
        assert_eq!(q("500m").add(&q("1")).unwrap().canonical(), "1500m");
        assert_eq!(q("1Gi").add(&q("1Gi")).unwrap().canonical(), "2Gi");
        assert_eq!(q("1n").round_up_milli().canonical(), "1m");
        assert_eq!(q("1500m").round_up_milli().canonical(), "1500m");
    }
}
