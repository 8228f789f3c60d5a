//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`): syntax checks,
//! exact comparison, and scaling of the storage size.
//!
//! Arithmetic is on integers only. Kubernetes itself stores quantities as
//! fixed-point numbers, and a float would compare `0.1` and `100m` wrongly.

use std::fmt;

/// Maximum number of digits in a storage size. Eighteen digits fit a `u64`,
/// so scaling a size by a `u32` factor cannot overflow a `u128`.
pub const MAX_STORAGE_SIZE_DIGITS: usize = 18;

/// Maximum number of digits in any other quantity, so that its value in
/// thousandths of a unit fits a `u128`.
const MAX_QUANTITY_DIGITS: usize = 30;

/// Maximum magnitude of a decimal exponent such as the `3` of `2e3`.
const MAX_EXPONENT: i32 = 30;

/// Maximum value of a quantity, `2^63 - 1` units, in thousandths of a
/// unit.
const MAX_MILLI_UNITS: u128 = (i64::MAX as u128) * 1000;

/// Suffixes that the ChatTenant schema allows on a storage size.
const STORAGE_SUFFIXES: [&str; 8] = ["Ki", "Mi", "Gi", "Ti", "k", "M", "G", "T"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("expected a number with an optional suffix, such as 500m, 128Mi or 2")]
    Syntax,
    #[error(
        "expected digits with an optional fraction and one of the suffixes Ki, Mi, Gi, Ti, k, M, G or T, such as 10Gi"
    )]
    StorageSyntax,
    #[error("must not be negative")]
    Negative,
    #[error("must be greater than zero")]
    Zero,
    #[error("has too many digits: use a larger suffix")]
    TooManyDigits,
    #[error("is larger than the maximum quantity, 2^63-1")]
    TooLarge,
}

/// A size of the embedded store's volume, in the form the ChatTenant schema
/// accepts: `^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$`, and not zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSize {
    text: String,
    /// The number's digits without the decimal point.
    digits: u64,
    /// How many of `digits` follow the decimal point.
    fraction_digits: u32,
    suffix: String,
}

impl StorageSize {
    /// Parses `text` as a storage size.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let suffix_start = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(suffix_start);
        if !(suffix.is_empty() || STORAGE_SUFFIXES.contains(&suffix)) {
            return Err(QuantityError::StorageSyntax);
        }

        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let fraction_valid = !number.contains('.') || !fraction.is_empty();
        let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !fraction_valid || !all_digits(whole) || !all_digits(fraction) {
            return Err(QuantityError::StorageSyntax);
        }

        if whole.len() + fraction.len() > MAX_STORAGE_SIZE_DIGITS {
            return Err(QuantityError::TooManyDigits);
        }
        let digits = format!("{whole}{fraction}")
            .parse::<u64>()
            .map_err(|_| QuantityError::TooManyDigits)?;
        if digits == 0 {
            return Err(QuantityError::Zero);
        }
        Ok(Self {
            text: text.to_owned(),
            digits,
            fraction_digits: fraction.len() as u32,
            suffix: suffix.to_owned(),
        })
    }

    /// Returns the size as written in the spec.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Returns `factor` times this size, in the same suffix, without
    /// trailing zeros in the fraction: `1.5Gi` times 2 is `3Gi`.
    pub fn times(&self, factor: u32) -> String {
        let product = u128::from(self.digits) * u128::from(factor);
        let divisor = 10u128.pow(self.fraction_digits);
        let whole = product / divisor;
        let fraction = format!(
            "{:0width$}",
            product % divisor,
            width = self.fraction_digits as usize
        );
        let fraction = fraction.trim_end_matches('0');
        if fraction.is_empty() {
            format!("{whole}{}", self.suffix)
        } else {
            format!("{whole}.{fraction}{}", self.suffix)
        }
    }
}

impl fmt::Display for StorageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Returns the value of a quantity in thousandths of its unit, rounded up
/// as the API server rounds, so `0.1m` is 1 and `1Ki` is 1 024 000.
pub fn milli_units(text: &str) -> Result<u128, QuantityError> {
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    if unsigned.starts_with('-') {
        return Err(QuantityError::Negative);
    }
    let suffix_start = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(suffix_start);

    let (digits, fraction_digits) = parse_number(number)?;
    let (binary_factor, decimal_exponent) = parse_suffix(suffix)?;
    // Thousandths: the value times 10^3, with the fraction's digits divided out.
    let exponent = decimal_exponent + 3 - fraction_digits;
    let scaled = digits
        .checked_mul(binary_factor)
        .ok_or(QuantityError::TooLarge)?;
    let value = if exponent >= 0 {
        10u128
            .checked_pow(exponent.unsigned_abs())
            .and_then(|power| scaled.checked_mul(power))
            .ok_or(QuantityError::TooLarge)?
    } else {
        let divisor = 10u128
            .checked_pow(exponent.unsigned_abs())
            .unwrap_or(u128::MAX);
        scaled.div_ceil(divisor)
    };

    if value > MAX_MILLI_UNITS {
        return Err(QuantityError::TooLarge);
    }
    Ok(value)
}

/// Splits `12.5` into the digits 125 and 1 fraction digit. Kubernetes also
/// accepts `12.` and `.5`.
fn parse_number(number: &str) -> Result<(u128, i32), QuantityError> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(QuantityError::Syntax);
    }
    if whole.len() + fraction.len() > MAX_QUANTITY_DIGITS {
        return Err(QuantityError::TooManyDigits);
    }
    let digits = format!("{whole}{fraction}")
        .parse::<u128>()
        .map_err(|_| QuantityError::Syntax)?;
    Ok((digits, fraction.len() as i32))
}

/// Returns the suffix as a binary factor and a power of ten.
fn parse_suffix(suffix: &str) -> Result<(u128, i32), QuantityError> {
    let binary = |power: u32| Ok((1u128 << power, 0));
    let decimal = |exponent: i32| Ok((1, exponent));
    match suffix {
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        "m" => decimal(-3),
        "" => decimal(0),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        _ => parse_exponent(suffix).map(|exponent| (1, exponent)),
    }
}

/// Parses a decimal exponent such as `e3` or `E-2`.
fn parse_exponent(suffix: &str) -> Result<i32, QuantityError> {
    let rest = suffix
        .strip_prefix(['e', 'E'])
        .ok_or(QuantityError::Syntax)?;
    let unsigned = rest.trim_start_matches(['+', '-']);
    let valid = !unsigned.is_empty()
        && unsigned.len() + 1 >= rest.len()
        && unsigned.bytes().all(|b| b.is_ascii_digit());
    if !valid {
        return Err(QuantityError::Syntax);
    }
    let exponent = rest
        .parse::<i32>()
        .map_err(|_| QuantityError::TooManyDigits)?;
    if exponent.abs() > MAX_EXPONENT {
        return Err(QuantityError::TooLarge);
    }
    Ok(exponent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_size_accepts_schema_forms() {
        for text in ["1", "10Gi", "1.5Gi", "500M", "2Ti", "3k", "0.5Gi"] {
            let size = StorageSize::parse(text).unwrap();
            assert_eq!(size.as_str(), text);
        }
    }

    #[test]
    fn storage_size_rejects_other_forms() {
        let cases = [
            ("", QuantityError::StorageSyntax),
            ("Gi", QuantityError::StorageSyntax),
            ("1.Gi", QuantityError::StorageSyntax),
            (".5Gi", QuantityError::StorageSyntax),
            ("1Pi", QuantityError::StorageSyntax),
            ("500m", QuantityError::StorageSyntax),
            ("1e3", QuantityError::StorageSyntax),
            ("-1Gi", QuantityError::StorageSyntax),
            ("1 Gi", QuantityError::StorageSyntax),
            ("1.2.3Gi", QuantityError::StorageSyntax),
            ("0", QuantityError::Zero),
            ("0.0Gi", QuantityError::Zero),
            ("1234567890123456789Gi", QuantityError::TooManyDigits),
        ];
        for (text, expected) in cases {
            assert_eq!(StorageSize::parse(text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn storage_size_times_keeps_suffix() {
        let cases = [
            ("1Gi", 2, "2Gi"),
            ("1.5Gi", 2, "3Gi"),
            ("1.25Gi", 2, "2.5Gi"),
            ("0.5Ti", 4, "2Ti"),
            ("750", 2, "1500"),
            ("0.05Gi", 2, "0.1Gi"),
        ];
        for (text, factor, expected) in cases {
            let size = StorageSize::parse(text).unwrap();
            assert_eq!(size.times(factor), expected, "{text} times {factor}");
        }
    }

    #[test]
    fn storage_size_times_largest_value() {
        let size = StorageSize::parse(&"9".repeat(MAX_STORAGE_SIZE_DIGITS)).unwrap();
        assert_eq!(
            size.times(u32::MAX),
            (999_999_999_999_999_999u128 * u128::from(u32::MAX)).to_string()
        );
    }

    #[test]
    fn milli_units_of_valid_quantities() {
        let cases = [
            ("100m", 100),
            ("1", 1000),
            ("+1", 1000),
            ("0.5", 500),
            ("1.", 1000),
            (".5", 500),
            ("0.1m", 1),
            ("1k", 1_000_000),
            ("1Ki", 1_024_000),
            ("128Mi", 128 * (1 << 20) * 1000),
            ("2e3", 2_000_000),
            ("2E-3", 2),
            ("1.5Gi", 1_610_612_736_000),
            ("0", 0),
        ];
        for (text, expected) in cases {
            assert_eq!(milli_units(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn milli_units_rejects_invalid() {
        let cases = [
            ("", QuantityError::Syntax),
            (".", QuantityError::Syntax),
            ("Mi", QuantityError::Syntax),
            ("1mi", QuantityError::Syntax),
            ("1 Mi", QuantityError::Syntax),
            ("1e", QuantityError::Syntax),
            ("1e+-3", QuantityError::Syntax),
            ("1.2.3", QuantityError::Syntax),
            ("-1", QuantityError::Negative),
            ("+-1", QuantityError::Negative),
            ("1e40", QuantityError::TooLarge),
            ("10Ei", QuantityError::TooLarge),
            (&"9".repeat(31), QuantityError::TooManyDigits),
        ];
        for (text, expected) in cases {
            assert_eq!(milli_units(text), Err(expected), "{text:?}");
        }
    }
}
