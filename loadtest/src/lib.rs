//! corecast load tester: an io_uring client holding up to a million connections, goim's
//! benchmark scenarios, loss/order checks and reports.
//!
//! Not built yet (issue 4).
