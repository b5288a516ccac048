//! Flight's session-option actions: `SetSessionOptions` sets DataFusion settings in the
//! caller's session (as `SET` would, with the same refusals), `GetSessionOptions` lists
//! them, and `CloseSession` ends the session.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_flight::Action;
use prost::Message;
use quiver_core::proto::session_option_value::{OptionValue, StringListValue};
use quiver_core::proto::set_session_options_result::{Error as OptionError, ErrorValue};
use quiver_core::proto::{
    CloseSessionResult, GetSessionOptionsResult, SessionOptionValue, SetSessionOptionsRequest,
    SetSessionOptionsResult, close_session_result,
};
use tonic::Status;

use crate::client_session::ClientSession;
use crate::session::QueryService;

/// The encoded answer to `action` if it is one of the session actions; `None` otherwise.
pub(crate) async fn answer_session_action(
    queries: &QueryService,
    session: &Arc<ClientSession>,
    action: &Action,
) -> Option<Result<Vec<u8>, Status>> {
    Some(match action.r#type.as_str() {
        "SetSessionOptions" => set_options(queries, session, &action.body).await,
        "GetSessionOptions" => Ok(get_options(session).encode_to_vec()),
        "CloseSession" => {
            queries.sessions().close(session.id());
            Ok(CloseSessionResult {
                status: close_session_result::Status::Closed as i32,
            }
            .encode_to_vec())
        }
        _ => return None,
    })
}

async fn set_options(
    queries: &QueryService,
    session: &Arc<ClientSession>,
    body: &[u8],
) -> Result<Vec<u8>, Status> {
    let request = SetSessionOptionsRequest::decode(body)
        .map_err(|e| Status::invalid_argument(format!("decoding SetSessionOptions: {e}")))?;
    let known: Vec<String> = setting_entries(session)
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    let mut errors = HashMap::new();
    for (name, value) in request.session_options {
        let problem = if !known.contains(&name) {
            Some(ErrorValue::InvalidName)
        } else {
            match text_of(&value) {
                None => Some(ErrorValue::InvalidValue),
                Some(text) => {
                    let sql = format!("SET {name} = '{}'", text.replace('\'', "''"));
                    match queries.execute_update(session, &sql, None).await {
                        Ok(_) => None,
                        Err(error) => {
                            tracing::debug!(%name, %error, "session option refused");
                            Some(ErrorValue::InvalidValue)
                        }
                    }
                }
            }
        };
        if let Some(problem) = problem {
            errors.insert(
                name,
                OptionError {
                    value: problem as i32,
                },
            );
        }
    }
    Ok(SetSessionOptionsResult { errors }.encode_to_vec())
}

/// A setting's text from a session option value; lists have no setting to go to.
fn text_of(value: &SessionOptionValue) -> Option<String> {
    Some(match value.option_value.as_ref()? {
        OptionValue::StringValue(text) => text.clone(),
        OptionValue::BoolValue(flag) => flag.to_string(),
        OptionValue::Int64Value(number) => number.to_string(),
        OptionValue::DoubleValue(number) => number.to_string(),
        OptionValue::StringListValue(StringListValue { .. }) => return None,
    })
}

/// Every setting of the session that has a value, as strings.
fn get_options(session: &ClientSession) -> GetSessionOptionsResult {
    let session_options = setting_entries(session)
        .into_iter()
        .filter_map(|(key, value)| {
            let value = value?;
            Some((
                key,
                SessionOptionValue {
                    option_value: Some(OptionValue::StringValue(value)),
                },
            ))
        })
        .collect();
    GetSessionOptionsResult { session_options }
}

/// The session's settings by the names `SET` takes: DataFusion's and Quiver's own.
fn setting_entries(session: &ClientSession) -> Vec<(String, Option<String>)> {
    session
        .context()
        .state()
        .config()
        .options()
        .entries()
        .into_iter()
        .map(|entry| (entry.key, entry.value))
        .collect()
}
