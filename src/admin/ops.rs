//! The one dispatch table of server-side operations. REST routes and admin WebSocket frames
//! both decode into an [`OpRequest`] and call [`dispatch`]; the answer is the body without
//! `duration`.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::model::ban_query::BannedQuery;
use crate::model::user::validate_id;
use crate::protocol::ApiError;
use crate::users::access::{authorize, Action};
use crate::users::requests::{
    BanUser, BlockUser, CreateGuest, CustomEvent, DeleteUsers, LifecycleOptions, MuteUsers,
    PartialUpdate, UnbanUser, UnmuteUsers, UpsertUsers, UserIds, MAX_EXPORT,
};
use crate::users::service::MAX_BATCH;
use crate::users::{Caller, UsersService};

/// An operation's input, whichever transport it came by.
#[derive(Debug, Default)]
pub struct OpRequest {
    /// The user or task id from the path (or the frame's `params.id`).
    pub id: Option<String>,
    /// Query parameters (or the frame's `params`).
    pub params: HashMap<String, String>,
    /// The JSON body.
    pub body: Value,
    /// Base URL of the admin listener, for export links.
    pub base_url: String,
}

impl OpRequest {
    /// The user id of the path (or the frame's `params.id`) only.
    fn path_id(&self) -> Result<&str, ApiError> {
        self.id
            .as_deref()
            .or_else(|| self.params.get("id").map(String::as_str))
            .ok_or_else(|| ApiError::input("id is a required parameter"))
    }

    fn id(&self) -> Result<&str, ApiError> {
        self.id
            .as_deref()
            .or_else(|| self.body.get("user_id").and_then(Value::as_str))
            .ok_or_else(|| ApiError::input("id is a required parameter"))
    }

    /// A boolean option from the query (`true`/`false`, `1`/`0`, empty) or the body; absent
    /// is false, anything else is refused (`hard_delete=maybe` must not quietly soft-delete).
    fn flag(&self, key: &str) -> Result<bool, ApiError> {
        let bad = || ApiError::input(format!("{key} must be true or false"));
        match self.params.get(key).map(String::as_str) {
            Some("true" | "1") => Ok(true),
            Some("false" | "0" | "") => Ok(false),
            Some(_) => Err(bad()),
            None => match self.body.get(key) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(bad()),
            },
        }
    }
}

/// Every operation: its name in admin WebSocket frames, and the name Stream's error messages
/// give it (`<Operation> failed with error: "..."`), set here once for every error.
pub const OPERATIONS: &[(&str, &str)] = &[
    ("upsertUsers", "UpdateUsers"),
    ("partialUpdateUsers", "UpdateUsersPartial"),
    ("queryUsers", "QueryUsers"),
    ("deleteUser", "DeleteUser"),
    ("deleteUsers", "DeleteUsers"),
    ("restoreUsers", "RestoreUsers"),
    ("deactivateUser", "DeactivateUser"),
    ("deactivateUsers", "DeactivateUsers"),
    ("reactivateUser", "ReactivateUser"),
    ("reactivateUsers", "ReactivateUsers"),
    ("exportUser", "ExportUser"),
    ("exportUsers", "ExportUsers"),
    ("getTask", "GetTask"),
    ("getApp", "GetApp"),
    ("updateApp", "UpdateApp"),
    ("createGuest", "CreateGuest"),
    ("sendUserCustomEvent", "SendUserCustomEvent"),
    ("muteUser", "MuteUser"),
    ("unmuteUser", "UnmuteUser"),
    ("blockUser", "BlockUser"),
    ("unblockUser", "UnblockUser"),
    ("getBlockedUsers", "GetBlockedUsers"),
    ("banUser", "BanUser"),
    ("unbanUser", "UnbanUser"),
    ("queryBannedUsers", "QueryBannedUsers"),
];

/// The operations the public listener also serves, run for the client that calls them (the
/// users service decides what a client may do: for itself only, or nothing).
pub const CLIENT_OPERATIONS: &[&str] = &[
    "sendUserCustomEvent",
    "muteUser",
    "unmuteUser",
    "blockUser",
    "unblockUser",
    "getBlockedUsers",
    "banUser",
    "unbanUser",
    "queryBannedUsers",
];

/// The name Stream's error messages give an operation.
pub fn operation_name(op: &str) -> Option<&'static str> {
    OPERATIONS
        .iter()
        .find(|(frame, _)| *frame == op)
        .map(|(_, name)| *name)
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Runs one operation with server rights; its errors name the operation.
pub async fn dispatch(
    svc: &UsersService,
    op: &str,
    req: OpRequest,
) -> Result<Map<String, Value>, ApiError> {
    dispatch_as(svc, &Caller::Server, op, req).await
}

/// Runs one operation for `caller`; a caller other than the server may run only the
/// [`CLIENT_OPERATIONS`]. Its errors name the operation.
pub async fn dispatch_as(
    svc: &UsersService,
    caller: &Caller,
    op: &str,
    req: OpRequest,
) -> Result<Map<String, Value>, ApiError> {
    let result = if *caller == Caller::Server || CLIENT_OPERATIONS.contains(&op) {
        run(svc, caller, op, req).await
    } else {
        Err(ApiError::input(format!("unknown operation {op}")))
    };
    match operation_name(op) {
        Some(name) => result.map_err(|e| e.in_operation(name)),
        None => result,
    }
}

async fn run(
    svc: &UsersService,
    caller: &Caller,
    op: &str,
    req: OpRequest,
) -> Result<Map<String, Value>, ApiError> {
    // Operations outside CLIENT_OPERATIONS reach here only for the server.
    let server = Caller::Server;
    let out = match op {
        "upsertUsers" => {
            let users = svc
                .upsert_users(&UpsertUsers::parse(&req.body)?, &server)
                .await?;
            json!({ "users": svc.users_by_id(&users).await })
        }
        "partialUpdateUsers" => {
            let update = PartialUpdate::parse(&req.body, &server)?;
            let users = svc.partial_update_users(&update, &server).await?;
            json!({ "users": svc.users_by_id(&users).await })
        }
        "queryUsers" => {
            let payload = match req.params.get("payload") {
                Some(p) => serde_json::from_str(p)
                    .map_err(|e| ApiError::input(format!("payload is not valid JSON: {e}")))?,
                None => req.body.clone(),
            };
            let users = svc.query_users(&payload, &server).await?;
            json!({ "users": users })
        }
        "deleteUser" => {
            let user = svc
                .delete_user(
                    req.id()?,
                    req.flag("hard_delete")?,
                    req.flag("mark_messages_deleted")?,
                )
                .await?;
            json!({ "user": svc.wire(&user).await })
        }
        "deleteUsers" => {
            json!({ "task_id": svc.delete_users(&DeleteUsers::parse(&req.body)?).await? })
        }
        "restoreUsers" => {
            svc.restore_users(&UserIds::parse(&req.body, MAX_BATCH)?)
                .await?;
            json!({})
        }
        "deactivateUser" => {
            let options = LifecycleOptions::parse(&req.body, false)?;
            let user = svc.deactivate_user(req.id()?, &options).await?;
            json!({ "user": svc.wire(&user).await })
        }
        "deactivateUsers" => {
            let ids = UserIds::parse(&req.body, MAX_BATCH)?;
            let options = LifecycleOptions::parse(&req.body, false)?;
            json!({ "task_id": svc.deactivate_users(&ids, &options).await? })
        }
        "reactivateUser" => {
            let options = LifecycleOptions::parse(&req.body, true)?;
            let user = svc.reactivate_user(req.id()?, &options).await?;
            json!({ "user": svc.wire(&user).await })
        }
        "reactivateUsers" => {
            let ids = UserIds::parse(&req.body, MAX_BATCH)?;
            let options = LifecycleOptions::parse(&req.body, false)?;
            json!({ "task_id": svc.reactivate_users(&ids, &options).await? })
        }
        "exportUser" => svc.export_user(req.id()?).await?,
        "exportUsers" => {
            let base = req.base_url.clone();
            let ids = UserIds::parse(&req.body, MAX_EXPORT)?;
            let task_id = svc
                .export_users(&ids, |id| format!("{base}/exports/users/{id}.json"))
                .await?;
            json!({ "task_id": task_id })
        }
        "getTask" => serde_json::to_value(svc.task(req.id()?).await?)
            .map_err(|e| ApiError::internal(e.to_string()))?,
        "getApp" => json!({ "app": svc.settings().to_wire(svc.api_key()) }),
        "updateApp" => {
            svc.update_app_settings(&req.body).await?;
            json!({})
        }
        "createGuest" => {
            let (user, token) = svc.create_guest(&CreateGuest::parse(&req.body)?).await?;
            json!({ "access_token": token, "user": svc.wire(&user).await })
        }
        "sendUserCustomEvent" => {
            authorize(caller, Action::SendCustomEvent, None)?;
            let event = CustomEvent::parse(&req.body)?;
            svc.send_user_custom_event(caller, req.path_id()?, &event)
                .await?;
            json!({})
        }
        "muteUser" => {
            authorize(caller, Action::MuteUser, None)?;
            let muted = svc
                .mute_users(caller, &MuteUsers::parse(&req.body)?)
                .await?;
            let mut out = json!({"mutes": muted.mutes, "own_user": muted.me});
            if let Some(first) = muted.mutes.first() {
                out["mute"] = first.clone();
            }
            out
        }
        "unmuteUser" => {
            authorize(caller, Action::MuteUser, None)?;
            svc.unmute_users(caller, &UnmuteUsers::parse(&req.body)?)
                .await?;
            json!({})
        }
        "blockUser" => {
            authorize(caller, Action::BlockUser, None)?;
            let req = BlockUser::parse(&req.body)?;
            let block = svc.block_user(caller, &req).await?;
            let by = req.user_id.clone().or_else(|| match caller {
                Caller::User(me) => Some(me.clone()),
                _ => None,
            });
            json!({
                "blocked_by_user_id": by,
                "blocked_user_id": block.blocked_user_id,
                "blocked_at": block.created_at.to_wire(),
            })
        }
        "unblockUser" => {
            authorize(caller, Action::BlockUser, None)?;
            svc.unblock_user(caller, &BlockUser::parse(&req.body)?)
                .await?;
            json!({})
        }
        "getBlockedUsers" => {
            authorize(caller, Action::BlockUser, None)?;
            let user_id = req
                .params
                .get("user_id")
                .map(String::as_str)
                .or_else(|| req.body.get("user_id").and_then(Value::as_str));
            if let Some(id) = user_id {
                validate_id(id)?;
            }
            json!({ "blocks": svc.blocked_users(caller, user_id).await? })
        }
        "banUser" => {
            svc.ban_user(caller, &BanUser::parse(&req.body)?).await?;
            json!({})
        }
        "unbanUser" => {
            // The SDKs send these in the query string; a frame or a body may carry them too.
            let mut fields = object(req.body.clone());
            for (k, v) in &req.params {
                fields.entry(k.clone()).or_insert(Value::String(v.clone()));
            }
            svc.unban_user(caller, &UnbanUser::parse(&Value::Object(fields))?)
                .await?;
            json!({})
        }
        "queryBannedUsers" => {
            let payload = match req.params.get("payload") {
                Some(p) => serde_json::from_str(p)
                    .map_err(|e| ApiError::input(format!("payload is not valid JSON: {e}")))?,
                None => req.body.clone(),
            };
            let query = BannedQuery::parse(&payload)?;
            json!({ "bans": svc.query_banned_users(caller, &query).await? })
        }
        other => return Err(ApiError::input(format!("unknown operation {other}"))),
    };
    Ok(object(out))
}
