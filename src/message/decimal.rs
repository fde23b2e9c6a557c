//! Unsigned integers as decimal text without `core::fmt`: a message id, a timestamp or a
//! length is written for every message, and `format!` was a few percent of those paths.

/// The decimal digits of a `u64`, on the stack.
pub struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    pub fn new(mut n: u64) -> Decimal {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal { digits, start }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits were written.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// `prefix` followed by `n`: a message id such as `<client id>:<session>:<n>`.
pub fn numbered(prefix: &str, n: u64) -> String {
    let n = Decimal::new(n);
    let mut text = String::with_capacity(prefix.len() + n.as_bytes().len());
    text.push_str(prefix);
    text.push_str(n.as_str());
    text
}

#[cfg(test)]
mod tests {
    use super::{Decimal, numbered};

    #[test]
    fn digits_are_those_display_writes() {
        for n in [0, 7, 10, 99, 1_700_000_000_123, u64::MAX] {
            assert_eq!(Decimal::new(n).as_str(), n.to_string());
        }
        assert_eq!(numbered("c1:2:", 17), "c1:2:17");
    }
}
