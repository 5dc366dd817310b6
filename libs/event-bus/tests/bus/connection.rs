use event_bus::{Bus, ConnectionState};

use crate::support::{NatsServer, SOON, wait_for_state, within};

#[tokio::test]
async fn connect_returns_at_once_and_connects_when_the_server_comes_up() {
    let mut server = NatsServer::stopped();

    let bus = within(
        SOON,
        "Bus::connect",
        Bus::connect(server.url(), "early-bird"),
    )
    .await
    .expect("set up the bus client");
    assert_eq!(bus.connection_state(), ConnectionState::Connecting);
    assert!(!bus.is_connected());

    server.start().await;
    wait_for_state(&bus, ConnectionState::Connected, SOON).await;
    assert!(bus.is_connected());
}
