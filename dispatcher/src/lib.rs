//! corecast dispatcher: goim's logic and job roles (HTTP push API, sessions, queue, room
//! batching, links to gateways).
//!
//! Not built yet (issue 3). Until it exists, the gateway's internal link is driven directly by
//! tests and by the bundled tools.
