//! Turning stored records back into watch events: the history a watcher catches up from.

use crate::{mvccpb, KvStore, MvccError, Revision, RevisionReader};

impl KvStore {
    /// The watch event a stored record stands for: a PUT, or a DELETE for a tombstone (whose kv
    /// holds the key and the deletion revision). `prev_kv` is the key's value just before the
    /// record's main revision, as etcd's watch reports it, or `None` when the key did not exist
    /// then or that revision has been compacted.
    pub fn event_for_record<R: RevisionReader + ?Sized>(
        &self,
        reader: &R,
        revision: Revision,
        record: mvccpb::KeyValue,
    ) -> Result<mvccpb::Event, MvccError> {
        let before = revision.main - 1;
        let prev_kv = if before >= self.compact_revision && before >= 1 {
            self.live(reader, &record.key, before)?
        } else {
            None
        };
        let kind = if record.version == 0 {
            mvccpb::event::EventType::Delete
        } else {
            mvccpb::event::EventType::Put
        };
        Ok(mvccpb::Event {
            r#type: kind as i32,
            kv: Some(record),
            prev_kv,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::mvccpb::event::EventType;
    use crate::tests::Harness;
    use crate::{pb, WriteRequest};

    #[test]
    fn records_replay_as_the_events_apply_produced() {
        let mut harness = Harness::new();
        let mut produced = Vec::new();
        for (key, value) in [("a", "1"), ("b", "x"), ("a", "2")] {
            let put = pb::PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            };
            produced.extend(harness.apply(WriteRequest::Put(put)).expect("put").events);
        }
        let delete = pb::DeleteRangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        };
        produced.extend(
            harness
                .apply(WriteRequest::DeleteRange(delete))
                .expect("delete")
                .events,
        );
        let replayed: Vec<_> = harness
            .records
            .records()
            .map(|(revision, record)| {
                harness
                    .store
                    .event_for_record(&harness.records, revision, record)
                    .expect("event")
            })
            .collect();
        assert_eq!(replayed, produced);
        assert_eq!(replayed[3].r#type, EventType::Delete as i32);
        assert_eq!(
            replayed[3].prev_kv.as_ref().map(|kv| kv.value.clone()),
            Some(b"2".to_vec())
        );
        assert_eq!(replayed[0].prev_kv, None);
    }

    #[test]
    fn prev_kv_below_the_compaction_is_not_reported() {
        let mut harness = Harness::new();
        harness.put("a", "1");
        harness.put("a", "2");
        harness.put("a", "3");
        harness.compact(3).expect("compact");
        let (revision, record) = harness.records.records().last().expect("record");
        let event = harness
            .store
            .event_for_record(&harness.records, revision, record)
            .expect("event");
        assert_eq!(event.prev_kv.map(|kv| kv.value), Some(b"2".to_vec()));
    }
}
