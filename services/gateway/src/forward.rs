//! Forwarding verified webhooks to messaging, batched: concurrent webhooks share one
//! `IngestWebhooks` call (the gRPC hop was the largest part of the gateway's and messaging's
//! CPU per webhook when each had its own call). Each webhook still gets its own result, and a
//! lone webhook is sent at once. The webhook's trace context travels inside its item.
use tonic::{Code, Status};
use wamesh_proto::messaging::v1::{
    IngestWebhookRequest, IngestWebhookResponse, IngestWebhooksRequest, ingest_webhook_result,
};
use wamesh_runtime::batch::{BatchConfig, Batcher};

use crate::Messaging;

/// Calls in flight to messaging at once, webhooks per call at most, webhooks waiting at most.
const BATCHES: BatchConfig = BatchConfig {
    workers: 4,
    max_batch: 64,
    queue_capacity: 1024,
};

/// Raw bytes in one call at most (webhooks are up to 3 MB each): a bigger batch is split.
/// messaging decodes calls of up to `wamesh_messaging::MAX_CALL_BYTES` (16 MB).
const MAX_CALL_BODY_BYTES: usize = 12 * 1024 * 1024;

type Stored = Result<IngestWebhookResponse, Status>;

/// The batching client of messaging's ingest.
#[derive(Clone)]
pub struct Forwarder {
    batcher: Batcher<IngestWebhookRequest, Stored>,
}

impl Forwarder {
    pub fn start(messaging: Messaging) -> Self {
        let batcher = Batcher::start(BATCHES, move |webhooks: Vec<IngestWebhookRequest>| {
            let messaging = messaging.clone();
            async move {
                let calls = chunks(webhooks, MAX_CALL_BODY_BYTES)
                    .into_iter()
                    .map(|webhooks| {
                        let mut messaging = messaging.clone();
                        async move {
                            let count = webhooks.len();
                            let request = IngestWebhooksRequest { webhooks };
                            match messaging.ingest_webhooks(request).await {
                                Ok(reply) => results(reply.into_inner().results, count),
                                Err(status) => vec![Err(status); count],
                            }
                        }
                    });
                futures::future::join_all(calls)
                    .await
                    .into_iter()
                    .flatten()
                    .collect()
            }
        });
        Self { batcher }
    }

    /// Sends one webhook to messaging (in a batch) and waits for its own result.
    pub async fn forward(&self, webhook: IngestWebhookRequest) -> Stored {
        self.batcher
            .submit(webhook)
            .await
            .unwrap_or_else(|_| Err(Status::unavailable("the gateway is shutting down")))
    }
}

/// Splits a batch, in order, into calls of at most `max_bytes` of bodies (a single bigger
/// webhook still goes alone).
fn chunks(webhooks: Vec<IngestWebhookRequest>, max_bytes: usize) -> Vec<Vec<IngestWebhookRequest>> {
    let mut calls: Vec<Vec<IngestWebhookRequest>> = Vec::new();
    let mut bytes = 0;
    for webhook in webhooks {
        let size = webhook.raw_body.len();
        match calls.last_mut() {
            Some(call) if bytes + size <= max_bytes => call.push(webhook),
            _ => {
                calls.push(vec![webhook]);
                bytes = 0;
            }
        }
        bytes += size;
    }
    calls
}

/// One result per webhook, from messaging's answer.
fn results(
    answers: Vec<wamesh_proto::messaging::v1::IngestWebhookResult>,
    count: usize,
) -> Vec<Stored> {
    if answers.len() != count {
        let status = Status::internal(format!(
            "messaging answered {} results for {count} webhooks",
            answers.len()
        ));
        return vec![Err(status); count];
    }
    answers
        .into_iter()
        .map(|answer| match answer.result {
            Some(ingest_webhook_result::Result::Stored(stored)) => Ok(stored),
            Some(ingest_webhook_result::Result::Error(e)) => {
                Err(Status::new(Code::from(e.code), e.message))
            }
            None => Err(Status::internal("messaging answered an empty result")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use wamesh_proto::messaging::v1::{IngestError, IngestWebhookResult};

    use super::*;

    #[test]
    fn big_batches_are_split_in_order_by_bytes() {
        let sized = |n: usize| IngestWebhookRequest {
            raw_body: vec![b'x'; n],
            ..Default::default()
        };
        let calls = chunks(vec![sized(5), sized(4), sized(2), sized(9), sized(1)], 10);
        let sizes: Vec<Vec<usize>> = calls
            .iter()
            .map(|c| c.iter().map(|w| w.raw_body.len()).collect())
            .collect();
        assert_eq!(sizes, vec![vec![5, 4], vec![2], vec![9, 1]]);
        assert_eq!(
            chunks(vec![sized(20)], 10).len(),
            1,
            "one too big still goes, alone"
        );
        assert!(chunks(Vec::new(), 10).is_empty());
    }

    #[test]
    fn each_webhook_gets_its_own_result_and_a_short_answer_fails_them_all() {
        let stored = IngestWebhookResult {
            result: Some(ingest_webhook_result::Result::Stored(
                IngestWebhookResponse {
                    delivery_id: 7,
                    ..Default::default()
                },
            )),
        };
        let refused = IngestWebhookResult {
            result: Some(ingest_webhook_result::Result::Error(IngestError {
                code: Code::Unavailable as i32,
                message: "down".into(),
            })),
        };
        let got = results(vec![stored.clone(), refused], 2);
        assert_eq!(got[0].as_ref().unwrap().delivery_id, 7);
        assert_eq!(got[1].as_ref().unwrap_err().code(), Code::Unavailable);
        let short = results(vec![stored], 2);
        assert!(
            short
                .iter()
                .all(|r| r.as_ref().is_err_and(|s| s.code() == Code::Internal))
        );
    }
}
