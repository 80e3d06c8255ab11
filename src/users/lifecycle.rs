//! Delete (soft, pruning, hard), deactivate, reactivate, restore and GDPR export, one at a time
//! and as batch tasks. Batch forms mark every user synchronously, in one atomic store batch,
//! and persist a completed task before its id is returned.

use serde_json::{json, Map, Value};

use crate::events::UserEvent;
use crate::model::bounds;
use crate::model::user::{validate_id, User};
use crate::protocol::{ApiError, ErrorCode, Timestamp};
use crate::store::{Expect, Task, UserChange};
use crate::users::requests::{DeleteMode, DeleteUsers, LifecycleOptions, UserIds};
use crate::users::service::{deleted, missing, name_checks, store_error, updated, UsersService};

impl UsersService {
    /// Builds the change that deletes `stored` in `mode`.
    fn delete_change(
        &self,
        stored: crate::store::StoredUser,
        mode: DeleteMode,
        now: Timestamp,
    ) -> (UserChange, User) {
        let mut user = stored.user;
        user.deleted_at = Some(now);
        user.updated_at = now;
        let expect = Expect::Version(stored.version);
        match mode {
            DeleteMode::Hard => (
                UserChange::Erase {
                    id: user.id.clone(),
                    expect,
                    deleted_at: now,
                },
                user,
            ),
            DeleteMode::Soft | DeleteMode::Pruning => {
                let tombstone = mode == DeleteMode::Pruning;
                if tombstone {
                    user.name = None;
                    user.image = None;
                    user.custom = Map::new();
                    user.mutes.clear();
                    user.blocks.clear();
                }
                let change = UserChange::Put {
                    user: user.clone(),
                    expect,
                    check_names: Vec::new(),
                    tombstone,
                };
                (change, user)
            }
        }
    }

    /// `DELETE /users/{id}`.
    pub async fn delete_user(
        &self,
        id: &str,
        hard: bool,
        mark_messages_deleted: bool,
    ) -> Result<User, ApiError> {
        validate_id(id)?;
        let mode = if hard {
            DeleteMode::Hard
        } else {
            DeleteMode::Soft
        };
        let now = Timestamp::now();
        let user = self
            .write_cycle(
                |svc| {
                    Box::pin(async move {
                        let stored = svc.load(id).await?.ok_or_else(|| missing(id))?;
                        if stored.user.deleted_at.is_some() && mode == DeleteMode::Soft {
                            return Err(deleted(id));
                        }
                        let (change, user) = svc.delete_change(stored, mode, now);
                        Ok((vec![change], user))
                    })
                },
                |user| {
                    vec![UserEvent::Deleted {
                        user: user.clone(),
                        hard,
                        mark_messages_deleted,
                    }]
                },
            )
            .await?;
        Ok(user)
    }

    /// `POST /users/delete`: a batch delete as a task.
    pub async fn delete_users(&self, req: &DeleteUsers) -> Result<String, ApiError> {
        let run = async {
            let DeleteUsers { ids, mode } = req;
            let mode = *mode;
            let now = Timestamp::now();
            let (_, result) = self
                .write_cycle(|svc| {
                    Box::pin(async move {
                        let mut changes = Vec::new();
                        let mut users = Vec::new();
                        let mut result = Map::new();
                        for id in ids {
                            match svc.load(id).await? {
                                None => {
                                    result.insert(id.clone(), json!({"status": "error", "error": format!("user {id} does not exist")}));
                                }
                                Some(s) if s.user.deleted_at.is_some() && mode != DeleteMode::Hard => {
                                    result.insert(id.clone(), json!({"status": "ok"}));
                                }
                                Some(s) => {
                                    let (change, user) = svc.delete_change(s, mode, now);
                                    changes.push(change);
                                    users.push(user);
                                    result.insert(id.clone(), json!({"status": "ok"}));
                                }
                            }
                        }
                        Ok((changes, (users, result)))
                    })
                }, |(users, _)| users.iter().map(|u| UserEvent::Deleted {
                    user: u.clone(),
                    hard: mode == DeleteMode::Hard,
                    mark_messages_deleted: false,
                }).collect())
                .await?;
            Ok(result)
        };
        let result = run.await?;
        self.completed_task(result).await
    }

    /// `POST /users/restore`: soft-deleted users come back, all or nothing.
    pub async fn restore_users(&self, req: &UserIds) -> Result<(), ApiError> {
        let ids = &req.0;
        self.sync_settings().await?;
        let mode = self.settings().enforcement();
        let now = Timestamp::now();
        self.write_cycle(
            |svc| {
                Box::pin(async move {
                    let mut changes = Vec::new();
                    let mut users = Vec::new();
                    for id in ids {
                        if svc.store.is_tombstoned(id).await.map_err(store_error)? {
                            return Err(deleted(id));
                        }
                        let stored = svc.load(id).await?.ok_or_else(|| missing(id))?;
                        if stored.user.deleted_at.is_none() {
                            return Err(ApiError::input(format!("user {id} is not deleted")));
                        }
                        let old = stored.user;
                        let mut user = old.clone();
                        user.deleted_at = None;
                        user.updated_at = now;
                        let check_names = name_checks(mode, Some(&old), &user);
                        users.push(user.clone());
                        changes.push(UserChange::Put {
                            user,
                            expect: Expect::Version(stored.version),
                            check_names,
                            tombstone: false,
                        });
                    }
                    Ok((changes, users))
                })
            },
            |users| users.iter().map(updated).collect(),
        )
        .await?;
        Ok(())
    }

    async fn creator(&self, options: &LifecycleOptions) -> Result<Option<User>, ApiError> {
        match options.created_by_id.as_deref() {
            None => Ok(None),
            Some(id) => Ok(self.load(id).await?.map(|s| s.user)),
        }
    }

    /// Deactivates users, in one batch.
    async fn deactivate(
        &self,
        ids: &[String],
        options: &LifecycleOptions,
    ) -> Result<Vec<User>, ApiError> {
        // Resolved before the write: a refused request must leave no trace.
        let by = self.creator(options).await?;
        let now = Timestamp::now();
        let users = self
            .write_cycle(
                |svc| {
                    Box::pin(async move {
                        let mut changes = Vec::new();
                        let mut users = Vec::new();
                        for id in ids {
                            let stored = svc.load(id).await?.ok_or_else(|| missing(id))?;
                            if stored.user.deleted_at.is_some() {
                                return Err(deleted(id));
                            }
                            let mut user = stored.user;
                            if user.deactivated_at.is_none() {
                                user.deactivated_at = Some(now);
                                user.updated_at = now;
                                changes.push(UserChange::Put {
                                    user: user.clone(),
                                    expect: Expect::Version(stored.version),
                                    check_names: Vec::new(),
                                    tombstone: false,
                                });
                            }
                            users.push(user);
                        }
                        Ok((changes, users))
                    })
                },
                |users| {
                    users
                        .iter()
                        .map(|u| UserEvent::Deactivated {
                            user: u.clone(),
                            created_by: by.clone(),
                        })
                        .collect()
                },
            )
            .await?;
        Ok(users)
    }

    /// `POST /users/{id}/deactivate`.
    pub async fn deactivate_user(
        &self,
        id: &str,
        options: &LifecycleOptions,
    ) -> Result<User, ApiError> {
        validate_id(id)?;
        let mut users = self.deactivate(&[id.to_owned()], options).await?;
        Ok(users.remove(0))
    }

    /// `POST /users/deactivate`: a batch as a task.
    pub async fn deactivate_users(
        &self,
        ids: &UserIds,
        options: &LifecycleOptions,
    ) -> Result<String, ApiError> {
        let users = self.deactivate(&ids.0, options).await?;
        let list: Vec<Value> = self
            .wire_all(&users)
            .await
            .into_iter()
            .map(Value::Object)
            .collect();
        let mut result = Map::new();
        result.insert("users".into(), Value::Array(list));
        self.completed_task(result).await
    }

    /// Reactivates users, in one batch; `name` renames a single user on the way back.
    async fn reactivate(
        &self,
        ids: &[String],
        name: Option<&str>,
        options: &LifecycleOptions,
    ) -> Result<Vec<User>, ApiError> {
        let by = self.creator(options).await?;
        self.sync_settings().await?;
        let mode = self.settings().enforcement();
        let now = Timestamp::now();
        let users = self
            .write_cycle(
                |svc| {
                    Box::pin(async move {
                        let mut changes = Vec::new();
                        let mut users = Vec::new();
                        for id in ids {
                            let stored = svc.load(id).await?.ok_or_else(|| missing(id))?;
                            if stored.user.deleted_at.is_some() {
                                return Err(deleted(id));
                            }
                            if stored.user.deactivated_at.is_none() {
                                return Err(ApiError::input(format!(
                                    "user {id} is not deactivated"
                                )));
                            }
                            let old = stored.user;
                            let mut user = old.clone();
                            user.deactivated_at = None;
                            user.updated_at = now;
                            if let Some(n) = name {
                                user.name = Some(n.to_owned());
                                bounds::check_user_size(&user)?;
                            }
                            let check_names = name_checks(mode, Some(&old), &user);
                            users.push(user.clone());
                            changes.push(UserChange::Put {
                                user,
                                expect: Expect::Version(stored.version),
                                check_names,
                                tombstone: false,
                            });
                        }
                        Ok((changes, users))
                    })
                },
                |users| {
                    users
                        .iter()
                        .map(|u| UserEvent::Reactivated {
                            user: u.clone(),
                            created_by: by.clone(),
                        })
                        .collect()
                },
            )
            .await?;
        Ok(users)
    }

    /// `POST /users/{id}/reactivate`.
    pub async fn reactivate_user(
        &self,
        id: &str,
        options: &LifecycleOptions,
    ) -> Result<User, ApiError> {
        validate_id(id)?;
        let name = options.name.as_deref();
        let mut users = self.reactivate(&[id.to_owned()], name, options).await?;
        Ok(users.remove(0))
    }

    /// `POST /users/reactivate`: a batch as a task.
    pub async fn reactivate_users(
        &self,
        ids: &UserIds,
        options: &LifecycleOptions,
    ) -> Result<String, ApiError> {
        let users = self.reactivate(&ids.0, None, options).await?;
        let list: Vec<Value> = self
            .wire_all(&users)
            .await
            .into_iter()
            .map(Value::Object)
            .collect();
        let mut result = Map::new();
        result.insert("users".into(), Value::Array(list));
        self.completed_task(result).await
    }

    /// `GET /users/{id}/export`.
    pub async fn export_user(&self, id: &str) -> Result<Value, ApiError> {
        validate_id(id)?;
        let stored = self.load(id).await?.ok_or_else(|| missing(id))?;
        Ok(self.export_item(&stored.user).await)
    }

    /// `POST /export/users`: exports up to 25 users; the task result holds a URL, built by
    /// `url_of` from the export id, that serves the document.
    pub async fn export_users(
        &self,
        ids: &UserIds,
        url_of: impl Fn(&str) -> String,
    ) -> Result<String, ApiError> {
        let ids = &ids.0;
        let mut users = Vec::new();
        for id in ids {
            if let Some(s) = self.load(id).await? {
                users.push(self.export_item(&s.user).await);
            }
        }
        let export_id = uuid::Uuid::new_v4().to_string();
        let doc = json!({"users": users});
        self.store
            .put_export(&export_id, &doc)
            .await
            .map_err(store_error)?;
        let mut result = Map::new();
        result.insert("url".into(), Value::String(url_of(&export_id)));
        self.completed_task(result).await
    }

    /// One user's part of an export: the user, what it holds against others (its mutes,
    /// expired ones too, and blocks), and the messages and reactions this gateway does not
    /// host.
    async fn export_item(&self, user: &User) -> Value {
        json!({
            "user": self.wire(user).await,
            "mutes": user.mutes,
            "blocks": user.blocks,
            "messages": [],
            "reactions": [],
        })
    }

    /// An export document.
    pub async fn export_document(&self, id: &str) -> Result<Value, ApiError> {
        let mut doc = self
            .store
            .get_export(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::new(ErrorCode::DoesNotExist, "export does not exist"))?;
        if let Some(users) = doc.get_mut("users").and_then(Value::as_array_mut) {
            self.drop_erased(users).await?;
        }
        Ok(doc)
    }

    /// `GET /tasks/{id}`.
    pub async fn task(&self, id: &str) -> Result<Task, ApiError> {
        let mut task = self
            .store
            .get_task(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::new(ErrorCode::DoesNotExist, format!("task {id} does not exist"))
            })?;
        if let Some(users) = task.result.get_mut("users").and_then(Value::as_array_mut) {
            self.drop_erased(users).await?;
        }
        Ok(task)
    }

    /// Removes from an export's or a task result's list the users hard-deleted since it was
    /// written: a hard delete erases a user's data everywhere it is served, not only in the
    /// user tree. Entries are users (`{"id":..}`) or export items (`{"user":{"id":..}}`).
    async fn drop_erased(&self, users: &mut Vec<Value>) -> Result<(), ApiError> {
        let mut kept = Vec::with_capacity(users.len());
        for entry in users.drain(..) {
            let id = entry
                .get("user")
                .unwrap_or(&entry)
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let erased = match &id {
                Some(id) => self.store.is_tombstoned(id).await.map_err(store_error)?,
                None => false,
            };
            if !erased {
                kept.push(entry);
            }
        }
        *users = kept;
        Ok(())
    }

    async fn completed_task(&self, result: Map<String, Value>) -> Result<String, ApiError> {
        let now = Timestamp::now();
        let task = Task {
            task_id: uuid::Uuid::new_v4().to_string(),
            status: "completed".into(),
            created_at: now,
            updated_at: now,
            result,
            error: None,
        };
        self.store.put_task(&task).await.map_err(store_error)?;
        Ok(task.task_id)
    }
}
