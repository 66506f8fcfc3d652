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

type Stored = Result<IngestWebhookResponse, Status>;

/// The batching client of messaging's ingest.
#[derive(Clone)]
pub struct Forwarder {
    batcher: Batcher<IngestWebhookRequest, Stored>,
}

impl Forwarder {
    pub fn start(messaging: Messaging) -> Self {
        let batcher = Batcher::start(BATCHES, move |webhooks: Vec<IngestWebhookRequest>| {
            let mut messaging = messaging.clone();
            async move {
                let count = webhooks.len();
                match messaging
                    .ingest_webhooks(IngestWebhooksRequest { webhooks })
                    .await
                {
                    Ok(reply) => results(reply.into_inner().results, count),
                    Err(status) => vec![Err(status); count],
                }
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
