//! The error envelope: `{"error": "...", "code": <gRPC code>, "message": "...", "details": []}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The gRPC codes the API answers with, each with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 3 INVALID_ARGUMENT, HTTP 400.
    InvalidArgument,
    /// 4 DEADLINE_EXCEEDED, HTTP 408 (the request body stalled past the body timeout).
    RequestTimeout,
    /// 5 NOT_FOUND, HTTP 404.
    NotFound,
    /// 6 ALREADY_EXISTS, HTTP 409.
    AlreadyExists,
    /// 8 RESOURCE_EXHAUSTED, HTTP 413 (upload larger than the limit).
    TooLarge,
    /// 8 RESOURCE_EXHAUSTED, HTTP 429 (as many uploads as the limit are being indexed).
    TooManyUploads,
    /// 9 FAILED_PRECONDITION, HTTP 400 (path conflict between enabled add-ons).
    FailedPrecondition,
    /// 12 UNIMPLEMENTED, HTTP 405 (known route, wrong method).
    MethodNotAllowed,
    /// 13 INTERNAL, HTTP 500.
    Internal,
    /// 14 UNAVAILABLE, HTTP 503 (`/readyz`: not ready).
    Unavailable,
    /// 16 UNAUTHENTICATED, HTTP 401.
    Unauthenticated,
}

impl Code {
    /// The gRPC code number.
    pub fn number(self) -> i32 {
        match self {
            Code::InvalidArgument => 3,
            Code::RequestTimeout => 4,
            Code::NotFound => 5,
            Code::AlreadyExists => 6,
            Code::TooLarge | Code::TooManyUploads => 8,
            Code::FailedPrecondition => 9,
            Code::MethodNotAllowed => 12,
            Code::Internal => 13,
            Code::Unavailable => 14,
            Code::Unauthenticated => 16,
        }
    }

    /// The HTTP status.
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Code::TooManyUploads => StatusCode::TOO_MANY_REQUESTS,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// An API failure, answered with the error envelope.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The gRPC code (and with it the HTTP status).
    pub code: Code,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": self.message,
            "code": self.code.number(),
            "message": self.message,
            "details": [],
        });
        let mut response = (self.code.http_status(), Json(body)).into_response();
        if self.code == Code::Unauthenticated {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if self.code == Code::TooManyUploads {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        }
        if self.code == Code::RequestTimeout {
            // The rest of a stalled body cannot be told from the next request.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}
