//! The platform a request counts against: Stream keeps separate budgets for server-side
//! calls, Android, iOS and web clients.

/// One of Stream's four rate-limit platforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    /// Calls made with the server token.
    ServerSide,
    /// Android clients (native SDK, or React Native / Flutter on Android).
    Android,
    /// iOS clients (Swift SDK, or React Native / Flutter on iOS).
    Ios,
    /// Everything else a client sends: browsers, and JS clients in Node with a user token.
    Web,
}

impl Platform {
    /// Every platform, in the order reports list them.
    pub const ALL: [Platform; 4] = [
        Platform::ServerSide,
        Platform::Android,
        Platform::Ios,
        Platform::Web,
    ];

    /// The key `GET /rate_limits` uses for it (also its query parameter).
    pub fn key(self) -> &'static str {
        match self {
            Platform::ServerSide => "server_side",
            Platform::Android => "android",
            Platform::Ios => "ios",
            Platform::Web => "web",
        }
    }

    /// The client platform an `X-Stream-Client` value names. Stream's SDKs send
    /// `<sdk>-v<version>|os=<os and version>|device_model=...|...`: the `os` field decides
    /// when present (React Native and Flutter run on both); otherwise the SDK's name
    /// (`stream-chat-android-...`, `stream-chat-swift-...`). Anything else is web.
    pub fn of_client(x_stream_client: Option<&str>) -> Platform {
        let Some(value) = x_stream_client else {
            return Platform::Web;
        };
        let value = value.to_ascii_lowercase();
        let mut parts = value.split('|');
        let head = parts.next().unwrap_or_default();
        for part in parts {
            if let Some(os) = part.trim().strip_prefix("os=") {
                let os = os.trim_start();
                if os.starts_with("android") {
                    return Platform::Android;
                }
                if os.starts_with("ios") || os.starts_with("ipados") {
                    return Platform::Ios;
                }
            }
        }
        if head.contains("android") {
            Platform::Android
        } else if head.contains("swift") || head.contains("-ios") {
            Platform::Ios
        } else {
            Platform::Web
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Platform::{self, *};

    #[test]
    fn clients_are_told_apart_by_their_x_stream_client() {
        let cases: [(Option<&str>, Platform); 9] = [
            (None, Web),
            (Some("stream-chat-js-v9.53.0-browser"), Web),
            (
                Some("stream-chat-js-v9.53.0-node|client_bundle=node-cjs"),
                Web,
            ),
            (
                Some("stream-chat-android-6.5.0|os=Android 14|api_version=34"),
                Android,
            ),
            (
                Some("stream-chat-swift-v4.70.0|os=iOS 17.4|device_model=iPhone15,2"),
                Ios,
            ),
            (
                Some("stream-chat-react-native-v7.1.0-llc-v9.0.0|os=iOS 18"),
                Ios,
            ),
            (
                Some("stream-chat-react-native-v7.1.0-llc-v9.0.0|os=Android 13"),
                Android,
            ),
            (Some("stream-chat-dart-v9.0.0|os=iPadOS 17"), Ios),
            (Some("stream-chat-android-compose-6.5.0"), Android),
        ];
        for (header, want) in cases {
            assert_eq!(Platform::of_client(header), want, "{header:?}");
        }
    }
}
