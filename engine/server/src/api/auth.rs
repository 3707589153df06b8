//! The HTTP side of API keys ([`crate::frontend::keys`]): `/v1/*` calls need a valid
//! bearer key when keys are configured, and carry the caller's [`TierAccess`] (a request
//! extension) to the handlers.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::frontend::keys::Refused;

/// Rejects `/v1/*` calls without a valid bearer key when keys are configured, and hands
/// the handlers the caller's [`crate::frontend::TierAccess`].
pub(super) async fn require_api_key(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let provided = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.api_keys.authorize(provided) {
        Ok(access) => {
            req.extensions_mut().insert(access);
            next.run(req).await
        }
        Err(Refused::Missing) => ApiError::unauthorized(None).into_response(),
        Err(Refused::Wrong) => {
            let key = provided.map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim());
            ApiError::unauthorized(key).into_response()
        }
    }
}
