//! [`Homes`]: where destinations live, when not every destination lives here. The registry
//! asks it which broker is a destination's home and for a reference to one homed
//! elsewhere; the cluster implements it (placement, the bridge, the member table). A lone
//! broker has none, and every destination is local.

use actix::{Addr, ArbiterHandle};

use super::{DestinationRef, TopicActor};
use crate::message::Destination;
use crate::stats::MemberStat;

pub trait Homes: Send + 'static {
    /// This broker's name.
    fn me(&self) -> &str;
    /// The broker `destination` lives on, if that is another one.
    fn remote_home(&self, destination: &Destination) -> Option<String>;
    /// A reference to `destination`, homed on `home`, through a proxy on `arbiter`.
    fn reference(
        &self,
        destination: &Destination,
        home: String,
        arbiter: &ArbiterHandle,
    ) -> DestinationRef;
    /// A topic homed on `home`, as subscribers here see it: the local topic `local`, fed
    /// from the home with `prefetch` credit; publishes go to the home.
    fn mirror(
        &self,
        destination: &Destination,
        home: String,
        arbiter: &ArbiterHandle,
        local: Addr<TopicActor>,
        prefetch: u32,
    ) -> DestinationRef;
    /// The member `destination` lives on.
    fn locate(&self, destination: &Destination) -> Option<MemberStat>;
    /// Every member, as `stat` shows them.
    fn members(&self) -> Vec<MemberStat>;
}
