//! The error envelope, its statuses and headers (Retry-After, x-should-retry).

use super::*;

#[test]
fn worker_codes_map_to_http_statuses() {
    let status = |code| {
        ApiError::from_reply(&ErrorBody {
            code,
            message: "m".into(),
            retryable: false,
        })
        .status
        .as_u16()
    };
    assert_eq!(status(ErrorCode::InvalidRequest), 400);
    assert_eq!(status(ErrorCode::PromptTooLong), 400);
    assert_eq!(status(ErrorCode::Timeout), 504);
    assert_eq!(status(ErrorCode::Expired), 504);
    assert_eq!(status(ErrorCode::Internal), 500);
    assert_eq!(status(ErrorCode::InferenceFailed), 500);
}

#[test]
fn a_reply_that_ended_its_task_tells_sdks_not_to_retry() {
    let no_retry = |code| {
        let error = ErrorBody {
            code,
            message: "m".into(),
            retryable: true,
        };
        ApiError::from_reply(&error)
            .into_response()
            .headers()
            .get("x-should-retry")
            == Some(&HeaderValue::from_static("false"))
    };
    assert!(no_retry(ErrorCode::InferenceFailed));
    assert!(no_retry(ErrorCode::Timeout));
    assert!(no_retry(ErrorCode::Expired));
    assert!(no_retry(ErrorCode::Cancelled));
    assert!(
        !no_retry(ErrorCode::Internal),
        "a fault of warren's own may pass"
    );
    let poison = ErrorBody {
        code: ErrorCode::Internal,
        message: "m".into(),
        retryable: false,
    };
    let poison = ApiError::from_reply(&poison).into_response();
    assert_eq!(poison.headers()["x-should-retry"], "false", "not run again");
    assert!(
        !no_retry(ErrorCode::InvalidRequest),
        "4xx: SDKs do not retry"
    );
    let waited = ApiError::timed_out(Duration::from_secs(1)).into_response();
    assert_eq!(waited.headers()["x-should-retry"], "false");
}

#[test]
fn a_full_queue_is_a_429_with_retry_after() {
    let response = ApiError::from(ClientError::QueueFull("q".into())).into_response();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response.headers()[header::RETRY_AFTER],
        "10",
        "unknown drain: the fallback"
    );
}

#[test]
fn the_envelope_has_openais_four_fields() {
    let body = ApiError::invalid("bad", Some("n".into())).body();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "n");
    assert_eq!(body["error"]["code"], "invalid_request");
    assert_eq!(body["error"]["message"], "bad");
}
