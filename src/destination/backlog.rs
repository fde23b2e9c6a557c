//! [`Backlog`]: a queue's waiting messages, highest priority first, FIFO within a priority
//! (JMS lets priorities reorder; nothing else may). A message given back (its consumer went,
//! or it was NACKed) returns to the front of its priority.

use std::collections::VecDeque;

use crate::message::MAX_PRIORITY;

/// Anything with a JMS priority.
pub trait Prioritized {
    fn priority(&self) -> u8;
}

pub struct Backlog<T> {
    /// One FIFO per priority, index = priority.
    levels: Vec<VecDeque<T>>,
    len: usize,
}

impl<T: Prioritized> Backlog<T> {
    pub fn new() -> Backlog<T> {
        Backlog {
            levels: (0..=MAX_PRIORITY).map(|_| VecDeque::new()).collect(),
            len: 0,
        }
    }

    fn level(&mut self, item: &T) -> &mut VecDeque<T> {
        let p = item.priority().min(MAX_PRIORITY) as usize;
        &mut self.levels[p]
    }

    /// Appends behind everything of the same priority.
    pub fn push_back(&mut self, item: T) {
        self.level(&item).push_back(item);
        self.len += 1;
    }

    /// Puts back in front of everything of the same priority.
    pub fn push_front(&mut self, item: T) {
        self.level(&item).push_front(item);
        self.len += 1;
    }

    /// The oldest message of the highest priority.
    pub fn pop_front(&mut self) -> Option<T> {
        let item = self.levels.iter_mut().rev().find_map(|l| l.pop_front())?;
        self.len -= 1;
        Some(item)
    }

    /// Every waiting item, highest priority first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.levels.iter().rev().flat_map(|l| l.iter())
    }

    /// Every waiting item, mutably, highest priority first.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.levels.iter_mut().rev().flat_map(|l| l.iter_mut())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T: Prioritized> Default for Backlog<T> {
    fn default() -> Self {
        Backlog::new()
    }
}

impl<T: Prioritized> Extend<T> for Backlog<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, items: I) {
        for item in items {
            self.push_back(item);
        }
    }
}

impl<T: Prioritized> FromIterator<T> for Backlog<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut backlog = Backlog::new();
        backlog.extend(items);
        backlog
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Prioritized for (u8, u32) {
        fn priority(&self) -> u8 {
            self.0
        }
    }

    #[test]
    fn highest_priority_first_fifo_within_one() {
        let mut backlog = Backlog::new();
        backlog.extend([(4, 1), (9, 2), (4, 3), (0, 4), (9, 5)]);
        backlog.push_front((4, 0));
        let order: Vec<u32> = std::iter::from_fn(|| backlog.pop_front())
            .map(|(_, n)| n)
            .collect();
        assert_eq!(order, vec![2, 5, 0, 1, 3, 4]);
        assert!(backlog.is_empty());
    }
}
