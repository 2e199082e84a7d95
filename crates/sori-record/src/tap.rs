//! The one bridge from a media tap to a recording, for room recordings and the
//! RecorderEndpoint alike.

use sori_sfu::TapPacket;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::{Feed, Input};

/// Passes a tap's packets to a recording until either side goes; `arrived` sees each packet
/// first (a count of what came in, for instance). The tap's channel is emptied as fast as
/// packets come: a writer that falls behind fills its own bounded queue, which drops and
/// counts the excess ([`Feed::dropped`]), instead of letting the tap's channel grow.
pub async fn forward(
    mut tap: UnboundedReceiver<TapPacket>,
    to: Feed,
    mut arrived: impl FnMut(&TapPacket),
) {
    while let Some(p) = tap.recv().await {
        arrived(&p);
        if to.send(Input::Packet(p)).is_err() {
            break;
        }
    }
}
