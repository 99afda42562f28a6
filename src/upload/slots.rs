//! Part slots handed out by priority: the object that started first gets the free slots first.
//!
//! A FIFO semaphore interleaves the parts of every object in flight, so they all finish together
//! at the end and their completions (which on a server like versitygw copy the whole object) run
//! back to back with nothing else in flight. Served in object order, each object finishes as soon
//! as its own parts are stored and its completion overlaps the next objects' parts; a stopped run
//! also leaves more objects complete.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Lower is served first: (object's start order, part number).
pub type Priority = (u64, u64);

pub struct Slots {
    inner: Mutex<Inner>,
}

struct Inner {
    free: usize,
    /// Waiters by priority, then arrival (`seq`), so equal priorities are first come, first served.
    waiting: BTreeMap<(Priority, u64), oneshot::Sender<Slot>>,
    seq: u64,
}

/// One slot, given back when dropped (also when it is dropped undelivered in a channel whose
/// waiter gave up).
pub struct Slot {
    slots: Option<Arc<Slots>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            slots.release();
        }
    }
}

impl Slots {
    pub fn new(count: usize) -> Arc<Slots> {
        Arc::new(Slots {
            inner: Mutex::new(Inner {
                free: count,
                waiting: BTreeMap::new(),
                seq: 0,
            }),
        })
    }

    /// Waits for a slot; cancel-safe (a dropped wait takes nothing).
    pub async fn acquire(self: &Arc<Self>, priority: Priority) -> Slot {
        let receive = {
            let mut inner = self.inner.lock().expect("slots lock");
            if inner.free > 0 {
                inner.free -= 1;
                return Slot {
                    slots: Some(Arc::clone(self)),
                };
            }
            let (send, receive) = oneshot::channel();
            inner.seq += 1;
            let seq = inner.seq;
            inner.waiting.insert((priority, seq), send);
            receive
        };
        receive
            .await
            .expect("a waiter's sender is only dropped after sending")
    }

    fn release(self: &Arc<Self>) {
        let mut inner = self.inner.lock().expect("slots lock");
        while let Some((_, send)) = inner.waiting.pop_first() {
            let slot = Slot {
                slots: Some(Arc::clone(self)),
            };
            match send.send(slot) {
                Ok(()) => return,
                // The waiter gave up: the slot comes back; disarm it (its drop would take this
                // lock again) and try the next waiter.
                Err(mut slot) => drop(slot.slots.take()),
            }
        }
        inner.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn free_slots_go_to_the_lowest_priority_first() {
        let slots = Slots::new(1);
        let held = slots.acquire((0, 1)).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for priority in [(2, 1), (1, 2), (1, 1), (3, 0)] {
            let (slots, order) = (Arc::clone(&slots), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let _slot = slots.acquire(priority).await;
                order.lock().unwrap().push(priority);
            }));
            // Every task is waiting before the slot comes back.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![(1, 1), (1, 2), (2, 1), (3, 0)]);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_takes_no_slot() {
        let slots = Slots::new(1);
        let held = slots.acquire((0, 0)).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(20), slots.acquire((0, 1))).await;
        assert!(gave_up.is_err());
        drop(held);
        // The slot is free again: two acquires in a row, the second after the first is dropped.
        let first = slots.acquire((5, 0)).await;
        assert_eq!(slots.inner.lock().unwrap().free, 0);
        drop(first);
        assert_eq!(slots.inner.lock().unwrap().free, 1);
    }
}
