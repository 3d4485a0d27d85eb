//! The tools every agent gets: `send`, `recv`, `status`, `set_status`, `nap`.

use hive_sh4re::Mailbox;
use hive_sh4re::agent::AgentRequest;
use hive_sh4re::limits::{
    MAX_BODY_BYTES, NAP_MAX_SECONDS, NAP_MIN_SECONDS, RECV_MAX, STATUS_MAX_CHARS,
};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{HiveTools, render};

/// Arguments of `send`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct SendArgs {
    /// Recipient: an agent's name as `status` lists it (e.g. `alice`), or `operator` for the human.
    pub to: String,
    /// The message: plain text, up to 64 KiB.
    pub body: String,
}

/// Arguments of `recv`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub(super) struct RecvArgs {
    /// Most messages to return, 1 to 1000 (default 20).
    // `with` keeps `null` out of the schema's type and `skip_serializing_if`
    // keeps schemars from advertising `default: null`: the plain schema
    // models fill in best. A missing or null value is still None.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(min = 1, max = RECV_MAX))]
    pub max: Option<u32>,
}

/// Arguments of `set_status`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct SetStatusArgs {
    /// One line of at most 200 characters, e.g. "reviewing the parser PR"; empty clears it.
    pub text: String,
}

/// Arguments of `nap`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct NapArgs {
    /// How long to sleep, in seconds: 1 to 21600 (6 hours).
    #[schemars(range(min = NAP_MIN_SECONDS, max = NAP_MAX_SECONDS))]
    pub seconds: u64,
}

#[tool_router(router = agent_tools, vis = "pub(super)")]
impl HiveTools {
    #[tool(
        description = "Send a message to another agent's inbox or to the human operator. `to` is an agent name as the status tool lists it (e.g. `alice`) or `operator`; `body` is plain text up to 64 KiB. The recipient reads it at its next turn: this call does not wait for a reply, replies arrive later as new messages. Returns the message id. Refused, with the reason, when the recipient does not exist, your configuration does not allow writing to it, the body is empty or too long, or the recipient's inbox is full."
    )]
    async fn send(
        &self,
        Parameters(args): Parameters<SendArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<String, String> {
        let (to, body) = check_send(args)?;
        let resp = self
            .ask(
                AgentRequest::Send {
                    to: to.clone(),
                    body,
                    // Repeated under this key while hive-c0re cannot reach
                    // its store, the send is stored once.
                    key: Some(hive_sh4re::new_send_key()),
                },
                &ctx,
            )
            .await?;
        Ok(render::sent(resp.message_id, &to))
    }

    #[tool(
        description = "Read the messages that reached your inbox since this turn started (the turn's prompt already carries the earlier ones). Use it during a long task to see whether someone wrote meanwhile. `max` caps how many, 1 to 1000 (default 20); one call returns at most 1 MiB of bodies, the rest stay for the next call. Returns each message with its id, sender, time and body, or says the inbox is empty. Messages read here are this turn's: they will not come again once it ends, unless the turn fails (then they come back with its other messages)."
    )]
    async fn recv(
        &self,
        Parameters(args): Parameters<RecvArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<String, String> {
        let max = check_recv(args)?;
        let resp = self.ask(AgentRequest::Recv { max }, &ctx).await?;
        Ok(render::messages(
            resp.messages.as_deref().unwrap_or_default(),
        ))
    }

    #[tool(
        description = "List the hive's agents, one line each: name, state (idle, thinking, compacting, napping) and since when, whether it is running, its model, how many messages wait in its inbox, and its one-line status. Use it to learn whom you can write to and what they are doing. The human operator is always reachable as `operator`. Changes nothing.",
        annotations(read_only_hint = true)
    )]
    async fn status(&self, ctx: RequestContext<RoleServer>) -> Result<String, String> {
        let resp = self.ask(AgentRequest::Status, &ctx).await?;
        Ok(render::agents(resp.agents.as_deref().unwrap_or_default()))
    }

    #[tool(
        description = "Set your own one-line status, at most 200 characters, that the operator's dashboard and the other agents' status tool show: what you are working on or waiting for. An empty text clears it. Returns a confirmation."
    )]
    async fn set_status(
        &self,
        Parameters(args): Parameters<SetStatusArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<String, String> {
        let text = check_status(args)?;
        self.ask(AgentRequest::SetStatus { text: text.clone() }, &ctx)
            .await?;
        Ok(render::status_set(&text))
    }

    #[tool(
        description = "Sleep: the hive starts no new turn for you until `seconds` from now (1 to 21600, i.e. 6 hours), even when messages arrive; they wait in your inbox and come together when you wake. Returns at once, and this turn goes on: finish it after calling nap. Use it when you wait for something slow and have nothing else to do."
    )]
    async fn nap(
        &self,
        Parameters(args): Parameters<NapArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<String, String> {
        let seconds = check_nap(args)?;
        let resp = self.ask(AgentRequest::Nap { seconds }, &ctx).await?;
        Ok(render::text_or(resp.text, || {
            format!("napping for {seconds}s")
        }))
    }
}

/// Validates `send`'s arguments into (recipient, body); hive-c0re checks again.
pub(super) fn check_send(args: SendArgs) -> Result<(String, String), String> {
    let to = args.to.trim();
    match Mailbox::parse(to) {
        Err(e) => {
            return Err(format!(
                "cannot send to {to:?}: {e}; use a name from the status tool or `operator`"
            ));
        }
        Ok(Mailbox::System) => {
            return Err("\"system\" is the hive's own notice board and takes no messages: write to an agent or `operator`".into());
        }
        Ok(_) => {}
    }
    if args.body.trim().is_empty() {
        return Err("the message body is empty: write something to send".into());
    }
    if args.body.len() > MAX_BODY_BYTES {
        return Err(format!(
            "the message body is {} bytes, over the limit of {MAX_BODY_BYTES}: shorten it or put it in a file and send the path",
            args.body.len()
        ));
    }
    Ok((to.to_owned(), args.body))
}

/// Validates `recv`'s `max`.
pub(super) fn check_recv(args: RecvArgs) -> Result<Option<u32>, String> {
    match args.max {
        Some(m) if !(1..=RECV_MAX).contains(&m) => Err(format!(
            "max must be between 1 and {RECV_MAX}; {m} is out of range"
        )),
        m => Ok(m),
    }
}

/// Validates a status text: one line, at most 200 characters, trimmed.
pub(super) fn check_status(args: SetStatusArgs) -> Result<String, String> {
    let text = args.text.trim();
    if text.contains(['\n', '\r']) {
        return Err("a status is a single line: drop the line breaks".into());
    }
    let n = text.chars().count();
    if n > STATUS_MAX_CHARS {
        return Err(format!(
            "a status is at most {STATUS_MAX_CHARS} characters; this one has {n}: shorten it"
        ));
    }
    Ok(text.to_owned())
}

/// Validates a nap length.
pub(super) fn check_nap(args: NapArgs) -> Result<u64, String> {
    if (NAP_MIN_SECONDS..=NAP_MAX_SECONDS).contains(&args.seconds) {
        Ok(args.seconds)
    } else {
        Err(format!(
            "a nap lasts {NAP_MIN_SECONDS} to {NAP_MAX_SECONDS} seconds (6 hours); {} is out of range",
            args.seconds
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(to: &str, body: &str) -> Result<(String, String), String> {
        check_send(SendArgs {
            to: to.into(),
            body: body.into(),
        })
    }

    #[test]
    fn send_takes_agents_and_the_operator() {
        assert_eq!(send(" bob ", "hi"), Ok(("bob".into(), "hi".into())));
        assert!(send("operator", "hi").is_ok());
    }

    #[test]
    fn send_refuses_bad_recipients_with_a_reason() {
        assert!(send("Bob", "hi").unwrap_err().contains("lowercase"));
        assert!(send("", "hi").unwrap_err().contains("empty"));
        assert!(send("system", "hi").unwrap_err().contains("notice board"));
    }

    #[test]
    fn send_refuses_empty_and_oversized_bodies() {
        assert!(send("bob", " \n").unwrap_err().contains("empty"));
        let big = "x".repeat(MAX_BODY_BYTES + 1);
        assert!(
            send("bob", &big)
                .unwrap_err()
                .contains("over the limit of 65536")
        );
        assert!(send("bob", &big[1..]).is_ok());
    }

    #[test]
    fn recv_bounds() {
        assert_eq!(check_recv(RecvArgs { max: None }), Ok(None));
        assert_eq!(check_recv(RecvArgs { max: Some(1000) }), Ok(Some(1000)));
        assert!(
            check_recv(RecvArgs { max: Some(0) })
                .unwrap_err()
                .contains("between 1 and 1000")
        );
        assert!(check_recv(RecvArgs { max: Some(1001) }).is_err());
    }

    #[test]
    fn status_is_one_short_line() {
        assert_eq!(
            check_status(SetStatusArgs {
                text: "  busy ".into()
            }),
            Ok("busy".into())
        );
        assert_eq!(
            check_status(SetStatusArgs {
                text: String::new()
            }),
            Ok(String::new())
        );
        assert!(
            check_status(SetStatusArgs {
                text: "a\nb".into()
            })
            .is_err()
        );
        assert!(
            check_status(SetStatusArgs {
                text: "é".repeat(201)
            })
            .unwrap_err()
            .contains("201")
        );
        assert!(
            check_status(SetStatusArgs {
                text: "é".repeat(200)
            })
            .is_ok()
        );
    }

    #[test]
    fn nap_bounds_are_named_in_the_refusal() {
        assert_eq!(check_nap(NapArgs { seconds: 1 }), Ok(1));
        assert_eq!(check_nap(NapArgs { seconds: 21600 }), Ok(21600));
        let e = check_nap(NapArgs { seconds: 0 }).unwrap_err();
        assert!(e.contains("1 to 21600"), "{e}");
        assert!(check_nap(NapArgs { seconds: 21601 }).is_err());
    }
}
