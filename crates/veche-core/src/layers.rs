//! Simulcast: a camera arrives in up to three layers (VP8 rids `q`, `h`, `f`: a quarter,
//! half and the full size), and each viewer's stream of it carries one layer at a time.
//!
//! What a viewer should get ([`want_for`]) follows what its page shows: nothing for a
//! tile it does not show, else the smallest layer that fills the tile. Its stream switches
//! ([`Gate::admit`]) only where a picture can start: at a keyframe of the layer it moves
//! to, so the viewer's decoder never sees a frame it cannot decode, and until then it keeps
//! the layer it has. A layer no viewer has or wants is paused at the publisher.

use std::time::{Duration, Instant};

use crate::alloc::Reason;
use crate::ParticipantId;

/// One simulcast layer: 0 is the smallest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Layer(u8);

impl Layer {
    /// The layers a camera is published in, smallest first.
    pub const ALL: [Layer; 3] = [Layer(0), Layer(1), Layer(2)];
    /// The largest.
    pub const TOP: Layer = Layer(2);

    /// The layer of a VP8 rid (`q`, `h`, `f`), or `None` for any other.
    pub fn from_rid(rid: &str) -> Option<Layer> {
        match rid {
            "q" => Some(Layer(0)),
            "h" => Some(Layer(1)),
            "f" => Some(Layer(2)),
            _ => None,
        }
    }

    /// Its rid, as the page names its encodings.
    pub fn rid(self) -> &'static str {
        ["q", "h", "f"][usize::from(self.0.min(2))]
    }

    /// 0 for the smallest.
    pub fn index(self) -> u8 {
        self.0
    }

    /// The picture's height at a 720p camera (what the page's encodings make of it).
    pub fn height(self) -> u32 {
        [180, 360, 720][usize::from(self.0.min(2))]
    }

    fn distance(self, other: Layer) -> u8 {
        self.0.abs_diff(other.0)
    }
}

/// A set of layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Layers(u8);

impl Layers {
    /// No layer.
    pub const NONE: Layers = Layers(0);
    /// Every layer.
    pub const ALL: Layers = Layers(0b111);

    /// With `l` too.
    pub fn with(self, l: Layer) -> Layers {
        Layers(self.0 | 1 << l.0)
    }

    /// Whether `l` is in it.
    pub fn has(self, l: Layer) -> bool {
        self.0 & (1 << l.0) != 0
    }

    /// Its layers, smallest first.
    pub fn iter(self) -> impl Iterator<Item = Layer> {
        Layer::ALL.into_iter().filter(move |l| self.has(*l))
    }

    /// Their rids, smallest first.
    pub fn rids(self) -> Vec<&'static str> {
        self.iter().map(Layer::rid).collect()
    }

    /// The layers of these rids (others are ignored).
    pub fn from_rids<S: AsRef<str>>(rids: impl IntoIterator<Item = S>) -> Layers {
        rids.into_iter()
            .filter_map(|r| Layer::from_rid(r.as_ref()))
            .fold(Layers::NONE, Layers::with)
    }

    /// The layers in both.
    pub fn and(self, other: Layers) -> Layers {
        Layers(self.0 & other.0)
    }

    /// Its layers that are not in `other`.
    pub fn without(self, other: Layers) -> Layers {
        Layers(self.0 & !other.0)
    }

    /// The largest.
    pub fn top(self) -> Option<Layer> {
        self.iter().last()
    }
}

/// What a viewer's page shows of one video track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TileView {
    /// On screen: false for a tile hidden, scrolled away or on a page not shown.
    pub visible: bool,
    /// Its height on screen in device pixels.
    pub height: u32,
}

/// What a viewer should receive of one video track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// No video (audio goes on).
    Off,
    /// This layer (any picture, for a track without layers).
    Layer(Layer),
}

/// The layer for a tile: none for a tile not shown, else the smallest whose picture is at
/// least nine tenths of the tile's height (a little upscaling is not seen; a layer twice
/// the size is twice the bits). Without a view (a page that does not say, a node link, a
/// recording), the largest.
pub fn want_for(view: Option<TileView>) -> Want {
    let Some(v) = view else {
        return Want::Layer(Layer::TOP);
    };
    if !v.visible || v.height == 0 {
        return Want::Off;
    }
    let layer = Layer::ALL
        .into_iter()
        // In u64: a height comes from a page or another node, and any u32 is fine.
        .find(|l| u64::from(l.height()) * 10 >= u64::from(v.height) * 9)
        .unwrap_or(Layer::TOP);
    Want::Layer(layer)
}

/// A viewer's stream of one video track: which layer it carries, switching to the one it
/// wants at that layer's keyframe. Or, for a node link ([`Gate::passing`]), the layers it
/// carries side by side, one stream each, for the other node to choose from per viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    want: Want,
    /// What the stream carries now: nothing yet (or after it was off), a track without
    /// layers (`Some(None)`), or a layer.
    current: Option<Option<Layer>>,
    /// Moves on each time the stream resumes after being off: the renumbering treats what
    /// follows as a new stretch, so the viewer sees no hole to ask for.
    stretch: u32,
    /// A stream of several layers at once.
    pass: Option<Pass>,
}

/// The layers one stream carries side by side.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pass {
    /// What the receiver asked for.
    wanted: Layers,
    /// Of those, the ones started (each at its own keyframe).
    on: Layers,
    /// Each layer's stretch (as [`Gate::stretch`]: it moves on when the layer stops).
    stretches: [u32; 3],
}

/// Where one packet goes ([`Viewers::route`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The viewer.
    pub viewer: ParticipantId,
    /// The stretch of its stream (see [`Gate::stretch`]).
    pub stretch: u32,
    /// For a stream of several layers ([`Gate::passing`]), the layer's own stream it goes
    /// into; `None`: the viewer's one stream of the track.
    pub rid: Option<Layer>,
}

impl Gate {
    /// A stream that wants `want` and carries nothing yet.
    pub fn new(want: Want) -> Self {
        Self {
            want,
            current: None,
            stretch: 0,
            pass: None,
        }
    }

    /// A stream that carries each of `wanted` in its own stream (a node link's: the other
    /// node's viewers choose among them), each started at its own keyframe.
    pub fn passing(wanted: Layers) -> Self {
        Self {
            want: wanted.top().map_or(Want::Off, Want::Layer),
            current: None,
            stretch: 0,
            pass: Some(Pass {
                wanted,
                on: Layers::NONE,
                stretches: [0; 3],
            }),
        }
    }

    /// Whether it carries several layers ([`Gate::passing`]).
    pub fn is_passing(&self) -> bool {
        self.pass.is_some()
    }

    /// A stream of several layers carries `wanted` from now on: a layer no longer wanted
    /// stops (its next start is a new stretch). Returns the layers newly wanted, whose
    /// keyframes it waits for. Nothing for a stream of one layer.
    pub fn set_passing(&mut self, wanted: Layers) -> Layers {
        let Some(p) = self.pass.as_mut() else {
            return Layers::NONE;
        };
        for l in p.on.without(wanted).iter() {
            let i = usize::from(l.index());
            p.stretches[i] = p.stretches[i].wrapping_add(1);
        }
        let new = wanted.without(p.wanted);
        p.on = p.on.and(wanted);
        p.wanted = wanted;
        self.want = wanted.top().map_or(Want::Off, Want::Layer);
        new
    }

    /// The layers it carries now (a stream of one layer: that one).
    pub fn carrying(&self) -> Vec<Option<Layer>> {
        match (&self.pass, self.current) {
            (Some(p), _) => p.on.iter().map(Some).collect(),
            (None, Some(c)) => vec![c],
            (None, None) => Vec::new(),
        }
    }

    /// The layers it waits for a keyframe of (a stream of one layer: none, see
    /// [`Viewers::overdue`]).
    fn waiting(&self) -> Layers {
        self.pass
            .as_ref()
            .map_or(Layers::NONE, |p| p.wanted.without(p.on))
    }

    /// Whether a packet of `layer` (`keyframe`: it starts one) goes into this stream, and
    /// into which: the stretch and, for a stream of several layers, the layer's own.
    pub fn pass(&mut self, layer: Option<Layer>, keyframe: bool) -> Option<(u32, Option<Layer>)> {
        let Some(p) = self.pass.as_mut() else {
            return self.admit(layer, keyframe).then_some((self.stretch, None));
        };
        let l = layer.filter(|l| p.wanted.has(*l))?;
        if !p.on.has(l) {
            if !keyframe {
                return None;
            }
            p.on = p.on.with(l);
        }
        Some((p.stretches[usize::from(l.index())], Some(l)))
    }

    /// What it wants.
    pub fn want(&self) -> Want {
        self.want
    }

    /// What it carries: `None` nothing; `Some(None)` a track without layers. A stream of
    /// several layers: the largest it carries.
    pub fn current(&self) -> Option<Option<Layer>> {
        match &self.pass {
            Some(p) => p.on.top().map(Some),
            None => self.current,
        }
    }

    /// The stretch number of what it forwards (see the field).
    pub fn stretch(&self) -> u32 {
        self.stretch
    }

    /// Want `want` from now on. Returns the layer whose keyframe the switch waits for, if
    /// it waits for one. A stream of several layers takes what it carries from
    /// [`Gate::set_passing`] only.
    pub fn set(&mut self, want: Want) -> Option<Option<Layer>> {
        if self.pass.is_some() {
            return None;
        }
        self.want = want;
        match want {
            Want::Off => {
                self.stop();
                None
            }
            Want::Layer(l) => match self.current {
                Some(Some(c)) if c == l => None,
                // A track without layers that was on stays on.
                Some(None) => None,
                Some(Some(_)) => Some(Some(l)),
                None => Some(Some(l)),
            },
        }
    }

    fn stop(&mut self) {
        if self.current.take().is_some() {
            self.stretch = self.stretch.wrapping_add(1);
        }
    }

    /// Nothing carried, and what follows is a new stretch whatever came before (a voice
    /// too: its numbers go on without the hole of what was held back).
    fn restart(&mut self) {
        self.current = None;
        self.stretch = self.stretch.wrapping_add(1);
        if let Some(p) = self.pass.as_mut() {
            p.on = Layers::NONE;
            for s in &mut p.stretches {
                *s = s.wrapping_add(1);
            }
        }
    }

    /// Whether a packet of `layer` (`None`: the track has no layers) goes into this
    /// stream; `keyframe`: the packet starts a keyframe. A stream switches only at a
    /// keyframe: to the layer it wants, or, while that one does not come (the publisher's
    /// camera is too small for it, or it was paused), to the one nearest to it.
    pub fn admit(&mut self, layer: Option<Layer>, keyframe: bool) -> bool {
        let want = match self.want {
            Want::Off => return false,
            Want::Layer(l) => l,
        };
        if self.current == Some(layer) {
            return true;
        }
        if !keyframe {
            return false;
        }
        let better = match (self.current, layer) {
            (None, _) => true,
            (Some(Some(c)), Some(l)) => l.distance(want) < c.distance(want),
            // The publisher went from layers to none, or back: take what comes.
            _ => true,
        };
        if better {
            self.current = Some(layer);
        }
        better
    }

    /// The layers this stream needs from the publisher: the one it carries and the one it
    /// waits for; while it has no picture yet, every layer (the one it wants may never
    /// come: a camera too small for it), so whichever comes first starts it.
    pub fn needs(&self) -> Layers {
        if let Some(p) = &self.pass {
            return p.wanted;
        }
        if self.current.is_none() && matches!(self.want, Want::Layer(_)) {
            return Layers::ALL;
        }
        let mut n = Layers::NONE;
        if let Some(Some(c)) = self.current {
            n = n.with(c);
        }
        if let Want::Layer(l) = self.want {
            n = n.with(l);
        }
        n
    }
}

/// Who receives one track and, for video, what each viewer's stream carries; and which
/// layers its publisher is asked to send.
#[derive(Debug, Default)]
pub(crate) struct Viewers {
    /// Subscribers whose outgoing stream is negotiated: the forwarding set.
    ready: Vec<ParticipantId>,
    /// One per subscriber in `ready`, in the same order.
    gates: Vec<Gate>,
    /// One per subscriber in `ready`: in another breakout room than the publisher, so
    /// nothing is forwarded to it (its stream stays negotiated: a move back is a keyframe,
    /// not a renegotiation).
    apart: Vec<bool>,
    /// Subscribers whose stream is still being negotiated: they will need a first picture,
    /// so nothing is paused meanwhile (and what was paused resumes at once).
    coming: Vec<(ParticipantId, Instant)>,
    /// The layers the publisher sends; none for a picture without layers (and audio).
    layers: Layers,
    /// What the publisher was last asked to send.
    asked: Layers,
    /// Since when each layer it was asked for is no longer needed.
    idle_since: [Option<Instant>; 3],
    /// When a keyframe of each layer (the last: of a track without layers) was asked for.
    keyframe_asked: [Option<Instant>; 4],
    /// Packets came since the last [`Viewers::overdue`] (a track whose publisher sends
    /// nothing, a screen not shared, is not asked for keyframes over and over).
    flowing: bool,
    /// Housekeeping rounds since a packet came, and whether one ever came.
    idle_rounds: u8,
    heard: bool,
    /// Bits per second of each layer (of the one picture, or the audio, at index 0) the
    /// last time it was sent; 0: not measured yet.
    rates: [u64; 3],
    /// One per subscriber in `ready`: why it gets what it gets.
    reasons: Vec<Reason>,
    /// Packets of each layer since the last [`Viewers::overdue`], and for how many rounds
    /// in a row each had none while the others came.
    seen: [u16; 3],
    silent: [u8; 3],
}

/// What a layer is taken to cost before it was measured: the page's caps for its camera
/// layers; a picture without layers (a screen share, capped at 2.5 Mbit/s, mostly sends
/// far less) is taken as the largest camera layer.
const NOMINAL: [u64; 3] = [120_000, 500_000, 1_500_000];
const NOMINAL_PICTURE: u64 = 1_500_000;
/// Opus for speech with its headers (50 packets a second), before it was measured.
pub(crate) const NOMINAL_AUDIO: u64 = 64_000;

/// A layer nobody needs is paused this long after: a viewer moving between sizes does not
/// make the publisher stop and restart an encoder.
pub(crate) const PAUSE_AFTER: Duration = Duration::from_secs(3);

/// A subscription being negotiated keeps its camera's layers on at most this long.
const NEGOTIATION_HOLD: Duration = Duration::from_secs(10);

/// A layer none of whose packets came in `STOPPED_ROUNDS` housekeeping rounds in a row,
/// while at least this many of the others' did in each, has stopped coming.
const STOPPED_AFTER_OTHERS: u32 = 20;
const STOPPED_ROUNDS: u8 = 2;

/// A viewer that still waits for its layer's keyframe this long asks again (the request,
/// or the keyframe, was lost).
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(1);

impl Viewers {
    pub fn ready(&self) -> &[ParticipantId] {
        &self.ready
    }

    pub fn contains(&self, viewer: ParticipantId) -> bool {
        self.ready.contains(&viewer)
    }

    /// `viewer` subscribed at `now`: its stream is being negotiated.
    pub fn expect(&mut self, viewer: ParticipantId, now: Instant) {
        if !self.contains(viewer) && !self.coming.iter().any(|(v, _)| *v == viewer) {
            self.coming.push((viewer, now));
        }
    }

    /// `viewer`'s stream, still being negotiated, will not need a picture (it is in another
    /// room now).
    pub fn expect_not(&mut self, viewer: ParticipantId) {
        self.coming.retain(|(v, _)| *v != viewer);
    }

    /// `viewer`'s stream is negotiated: it wants `want`, and is `apart` (in another room).
    pub fn add(&mut self, viewer: ParticipantId, want: Want, apart: bool) {
        self.coming.retain(|(v, _)| *v != viewer);
        if !self.contains(viewer) {
            self.ready.push(viewer);
            self.gates.push(Gate::new(want));
            self.reasons.push(Reason::View);
            self.apart.push(apart);
        }
    }

    /// `viewer`'s stream of several layers is negotiated: it carries `wanted` (see
    /// [`Gate::passing`]).
    pub fn add_passing(&mut self, viewer: ParticipantId, wanted: Layers) {
        self.coming.retain(|(v, _)| *v != viewer);
        if !self.contains(viewer) {
            self.ready.push(viewer);
            self.gates.push(Gate::passing(wanted.and(self.layers)));
            self.reasons.push(Reason::View);
            self.apart.push(false);
        }
    }

    /// `viewer`'s stream of several layers carries `wanted` from now on: the layers whose
    /// keyframes it now waits for. `None`: it has no such stream.
    pub fn set_passing(&mut self, viewer: ParticipantId, wanted: Layers) -> Option<Layers> {
        let i = self.ready.iter().position(|v| *v == viewer)?;
        let gate = self.gates.get_mut(i).filter(|g| g.is_passing())?;
        Some(gate.set_passing(wanted.and(self.layers)))
    }

    /// Whether `viewer`'s stream carries several layers.
    pub fn is_passing(&self, viewer: ParticipantId) -> bool {
        self.gate(viewer).is_some_and(Gate::is_passing)
    }

    /// The layers `viewer`'s stream carries now.
    pub fn carrying(&self, viewer: ParticipantId) -> Vec<Option<Layer>> {
        self.gate(viewer).map(Gate::carrying).unwrap_or_default()
    }

    /// Whether `viewer` is in another breakout room than the publisher.
    pub fn is_apart(&self, viewer: ParticipantId) -> bool {
        self.ready
            .iter()
            .position(|v| *v == viewer)
            .is_some_and(|i| self.apart[i])
    }

    /// Put `viewer` in another room than the publisher (nothing forwarded), or back in the
    /// same: its stream then starts again at a keyframe, as a new stretch. Whether that
    /// changed anything.
    pub fn set_apart(&mut self, viewer: ParticipantId, apart: bool) -> bool {
        let Some(i) = self.ready.iter().position(|v| *v == viewer) else {
            return false;
        };
        if self.apart[i] == apart {
            return false;
        }
        self.apart[i] = apart;
        self.gates[i].restart();
        true
    }

    /// Those it is forwarded to (subscribed, negotiated, in the publisher's room).
    pub fn receiving(&self) -> Vec<ParticipantId> {
        self.ready
            .iter()
            .zip(&self.apart)
            .filter(|(_, apart)| !**apart)
            .map(|(v, _)| *v)
            .collect()
    }

    pub fn remove(&mut self, viewer: ParticipantId) {
        self.coming.retain(|(v, _)| *v != viewer);
        if let Some(i) = self.ready.iter().position(|v| *v == viewer) {
            self.ready.remove(i);
            self.gates.remove(i);
            self.reasons.remove(i);
            self.apart.remove(i);
        }
    }

    /// `layer` (`None`: the one picture, or the audio) was measured at `bps`.
    pub fn set_rate(&mut self, layer: Option<Layer>, bps: u64) {
        if bps > 0 {
            self.rates[layer.map_or(0, |l| usize::from(l.index()))] = bps;
        }
    }

    /// What each layer costs (measured, else the nominal figure): for a video without
    /// layers (and audio), at index 0.
    pub fn rates(&self, video: bool) -> [u64; 3] {
        let nominal = match (video, self.layers == Layers::NONE) {
            (false, _) => [NOMINAL_AUDIO; 3],
            (true, true) => [NOMINAL_PICTURE; 3],
            (true, false) => NOMINAL,
        };
        let mut r = self.rates;
        for (have, n) in r.iter_mut().zip(nominal) {
            if *have == 0 {
                *have = n;
            }
        }
        r
    }

    /// Whether its publisher sends: a packet came in the last two housekeeping rounds.
    pub fn sending(&self) -> bool {
        self.heard && self.idle_rounds < 2
    }

    /// What `viewer` wants now, and why.
    pub fn want_of(&self, viewer: ParticipantId) -> Option<(Want, Reason)> {
        let i = self.ready.iter().position(|v| *v == viewer)?;
        Some((self.gates.get(i)?.want(), *self.reasons.get(i)?))
    }

    /// Note why `viewer` gets what it gets.
    pub fn set_reason(&mut self, viewer: ParticipantId, reason: Reason) {
        if let Some(i) = self.ready.iter().position(|v| *v == viewer) {
            if let Some(r) = self.reasons.get_mut(i) {
                *r = reason;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.ready.len()
    }

    pub fn layers(&self) -> Layers {
        self.layers
    }

    /// What the publisher was last asked to send.
    pub fn asked(&self) -> Layers {
        self.asked
    }

    /// The publisher sends these layers (from its offer); all of them at first.
    pub fn set_layers(&mut self, layers: Layers) {
        self.layers = layers;
        self.asked = layers;
    }

    /// The gates of the viewers in the publisher's room.
    fn present(&self) -> impl Iterator<Item = &Gate> {
        self.gates
            .iter()
            .zip(&self.apart)
            .filter(|(_, apart)| !**apart)
            .map(|(g, _)| g)
    }

    fn gate(&self, viewer: ParticipantId) -> Option<&Gate> {
        let i = self.ready.iter().position(|v| *v == viewer)?;
        self.gates.get(i)
    }

    /// What `viewer`'s stream carries now (see [`Gate::current`]).
    pub fn current(&self, viewer: ParticipantId) -> Option<Option<Layer>> {
        self.gate(viewer).and_then(Gate::current)
    }

    /// `viewer` wants `want` from now on: the layer whose keyframe it waits for, if any.
    pub fn set_want(&mut self, viewer: ParticipantId, want: Want) -> Option<Option<Layer>> {
        let i = self.ready.iter().position(|v| *v == viewer)?;
        let gate = self.gates.get_mut(i)?;
        if gate.want() == want {
            return None;
        }
        gate.set(want)
            .map(|l| l.filter(|_| self.layers != Layers::NONE))
    }

    /// Who gets a packet of `layer` (`keyframe`: it starts one), with the stretch their
    /// stream is in, into `out`. Audio goes to everyone.
    pub fn route(
        &mut self,
        video: bool,
        layer: Option<Layer>,
        keyframe: bool,
        out: &mut Vec<Route>,
    ) {
        out.clear();
        self.flowing = true;
        self.heard = true;
        if let Some(l) = layer {
            let n = &mut self.seen[usize::from(l.index())];
            *n = n.saturating_add(1);
        }
        if !video {
            out.extend(
                self.ready
                    .iter()
                    .zip(&self.gates)
                    .zip(&self.apart)
                    .filter(|(_, apart)| !**apart)
                    .map(|((v, g), _)| Route {
                        viewer: *v,
                        stretch: g.stretch(),
                        rid: None,
                    }),
            );
            return;
        }
        for ((viewer, gate), apart) in self
            .ready
            .iter()
            .zip(self.gates.iter_mut())
            .zip(&self.apart)
        {
            if *apart {
                continue;
            }
            if let Some((stretch, rid)) = gate.pass(layer, keyframe) {
                out.push(Route {
                    viewer: *viewer,
                    stretch,
                    rid,
                });
            }
        }
    }

    /// Whether a keyframe of `layer` may be asked for at `now` (at most one per `interval`
    /// each), noting it. `force`: a viewer with nothing to show asks regardless.
    pub fn keyframe_due(
        &mut self,
        layer: Option<Layer>,
        now: Instant,
        interval: Duration,
        force: bool,
    ) -> bool {
        let slot = &mut self.keyframe_asked[layer.map_or(3, |l| usize::from(l.index()))];
        if !force && slot.is_some_and(|at| now.saturating_duration_since(at) < interval) {
            return false;
        }
        *slot = Some(now);
        true
    }

    /// The layers the viewers' streams carry (those whose pictures a lost frame breaks).
    pub fn carried(&self) -> Vec<Option<Layer>> {
        let mut out: Vec<Option<Layer>> = Vec::new();
        for c in self.present().flat_map(Gate::carrying) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    /// Layers whose keyframe some viewer has waited for too long, while the publisher
    /// sends: ask again.
    pub fn overdue(&mut self, now: Instant) -> Vec<Layer> {
        let mut due = Vec::new();
        if !std::mem::take(&mut self.flowing) {
            self.idle_rounds = self.idle_rounds.saturating_add(1);
            return due;
        }
        self.idle_rounds = 0;
        // A layer that stopped coming while others come (the publisher's encoder dropped
        // it, or the link that brings it no longer has room for it): a stream on it takes
        // the next keyframe of whichever layer comes, rather than freeze.
        // (A round of a second has dozens of a layer's packets while it comes.)
        // Two rounds in a row: a busy encoder may skip one layer for a moment.
        let seen = std::mem::take(&mut self.seen);
        let total: u32 = seen.iter().map(|n| u32::from(*n)).sum();
        let mut stopped = Layers::NONE;
        for l in self.layers.iter() {
            let i = usize::from(l.index());
            self.silent[i] = if seen[i] == 0 && total >= STOPPED_AFTER_OTHERS {
                self.silent[i].saturating_add(1)
            } else {
                0
            };
            if self.silent[i] >= STOPPED_ROUNDS {
                stopped = stopped.with(l);
            }
        }
        if stopped != Layers::NONE {
            for (gate, apart) in self.gates.iter_mut().zip(&self.apart) {
                if !apart
                    && !gate.is_passing()
                    && gate
                        .current
                        .is_some_and(|c| c.is_some_and(|l| stopped.has(l)))
                {
                    gate.current = None;
                }
            }
        }
        // A layer that stopped coming is not asked for again and again: its keyframe does
        // not come, and each ask makes the publisher's encoder start every other layer
        // afresh too (Chromium's simulcast keyframes all of them at once).
        let silent = self.silent;
        let live = |l: Layer| silent[usize::from(l.index())] < STOPPED_ROUNDS;
        for gate in self.present() {
            // A stream of several layers waits for each of its own.
            if gate.is_passing() {
                for l in gate.waiting().and(self.layers).iter().filter(|l| live(*l)) {
                    let slot = self.keyframe_asked[usize::from(l.index())];
                    let quiet =
                        slot.is_none_or(|at| now.saturating_duration_since(at) >= ASK_AGAIN_AFTER);
                    if quiet && !due.contains(&l) {
                        due.push(l);
                    }
                }
                continue;
            }
            let Want::Layer(l) = gate.want() else {
                continue;
            };
            let waiting = match gate.current() {
                None => true,
                Some(Some(c)) => c != l,
                Some(None) => false,
            };
            // With no picture yet, any layer's keyframe starts one.
            if gate.current().is_none() && self.layers != Layers::NONE {
                for any in self.layers.iter().filter(|l| live(*l)) {
                    let slot = self.keyframe_asked[usize::from(any.index())];
                    let quiet =
                        slot.is_none_or(|at| now.saturating_duration_since(at) >= ASK_AGAIN_AFTER);
                    if quiet && !due.contains(&any) {
                        due.push(any);
                    }
                }
                continue;
            }
            if !waiting
                || due.contains(&l)
                || (self.layers != Layers::NONE && (!self.layers.has(l) || !live(l)))
            {
                continue;
            }
            let slot = self.keyframe_asked[if self.layers == Layers::NONE {
                3
            } else {
                usize::from(l.index())
            }];
            if slot.is_none_or(|at| now.saturating_duration_since(at) >= ASK_AGAIN_AFTER) {
                due.push(l);
            }
        }
        due
    }

    /// What the publisher should send now, if that changed: at once every layer some viewer
    /// carries or waits for (all of them while a subscription is negotiated: its first
    /// picture starts from whichever keyframe comes first); a layer nobody needs, once it
    /// has not been needed for [`PAUSE_AFTER`].
    pub fn layers_to_send(&mut self, now: Instant) -> Option<Layers> {
        if self.layers == Layers::NONE {
            return None;
        }
        // A page that never answers holds nothing for long.
        let coming = self
            .coming
            .iter()
            .any(|(_, at)| now.saturating_duration_since(*at) < NEGOTIATION_HOLD);
        let mut needed = if coming { self.layers } else { Layers::NONE };
        for gate in self.present() {
            for l in gate.needs().iter() {
                if self.layers.has(l) {
                    needed = needed.with(l);
                }
            }
        }
        let mut send = Layers::NONE;
        for l in self.layers.iter() {
            let i = usize::from(l.index());
            if needed.has(l) {
                self.idle_since[i] = None;
                send = send.with(l);
            } else if self.asked.has(l) {
                let since = *self.idle_since[i].get_or_insert(now);
                if now.saturating_duration_since(since) < PAUSE_AFTER {
                    send = send.with(l);
                }
            }
        }
        if send == self.asked {
            return None;
        }
        self.asked = send;
        Some(send)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Layer = Layer(0);
    const H: Layer = Layer(1);
    const F: Layer = Layer(2);

    #[test]
    fn rids_name_the_layers_smallest_first() {
        assert_eq!(
            ["q", "h", "f", "x"].map(Layer::from_rid),
            [Some(Q), Some(H), Some(F), None]
        );
        assert_eq!(Layers::NONE.with(F).with(Q).rids(), ["q", "f"]);
        assert_eq!(Layers::ALL.iter().count(), 3);
    }

    #[test]
    fn a_tile_gets_the_smallest_layer_that_fills_it_and_a_hidden_one_none() {
        let at = |height| {
            want_for(Some(TileView {
                visible: true,
                height,
            }))
        };
        assert_eq!(at(120), Want::Layer(Q), "a thumbnail");
        assert_eq!(at(200), Want::Layer(Q), "180 is nine tenths of 200");
        assert_eq!(at(201), Want::Layer(H));
        assert_eq!(at(400), Want::Layer(H));
        assert_eq!(at(1080), Want::Layer(F), "nothing larger: the largest");
        assert_eq!(
            at(u32::MAX),
            Want::Layer(F),
            "any height another node says is taken, without overflow"
        );
        assert_eq!(
            want_for(Some(TileView {
                visible: false,
                height: 700
            })),
            Want::Off
        );
        assert_eq!(want_for(None), Want::Layer(F), "no view: the largest");
    }

    #[test]
    fn a_stream_starts_and_switches_only_at_keyframes() {
        let mut g = Gate::new(Want::Layer(H));
        assert!(!g.admit(Some(H), false), "no picture starts here");
        assert!(g.admit(Some(H), true));
        assert!(g.admit(Some(H), false));
        assert!(
            !g.admit(Some(Q), true),
            "not the wanted layer, and no nearer"
        );
        assert!(!g.admit(Some(F), true));
        // Down to q: h goes on until q's keyframe.
        assert_eq!(g.set(Want::Layer(Q)), Some(Some(Q)));
        assert!(g.admit(Some(H), false));
        assert!(!g.admit(Some(Q), false));
        assert!(g.admit(Some(Q), true));
        assert!(
            !g.admit(Some(H), false),
            "the old layer stops at the switch"
        );
        assert_eq!(g.current(), Some(Some(Q)));
    }

    #[test]
    fn while_the_wanted_layer_does_not_come_the_nearest_one_is_taken() {
        // A camera too small for the full layer sends q and h only.
        let mut g = Gate::new(Want::Layer(F));
        assert!(g.admit(Some(Q), true), "something rather than nothing");
        assert!(g.admit(Some(H), true), "nearer to f");
        assert!(!g.admit(Some(Q), true), "farther again");
        assert!(g.admit(Some(H), false));
        assert_eq!(g.needs(), Layers::NONE.with(H).with(F));
    }

    #[test]
    fn off_forwards_nothing_and_coming_back_is_a_new_stretch_from_a_keyframe() {
        let mut g = Gate::new(Want::Layer(Q));
        assert!(g.admit(Some(Q), true));
        assert_eq!(g.stretch(), 0);
        assert_eq!(g.set(Want::Off), None);
        assert!(!g.admit(Some(Q), true));
        assert_eq!(g.needs(), Layers::NONE);
        assert_eq!(g.set(Want::Layer(Q)), Some(Some(Q)), "waits for a keyframe");
        assert!(!g.admit(Some(Q), false));
        assert!(g.admit(Some(Q), true));
        assert_eq!(g.stretch(), 1);
    }

    #[test]
    fn a_stream_of_several_layers_starts_each_at_its_keyframe_and_restarts_it_as_a_new_stretch() {
        let mut g = Gate::passing(Layers::NONE.with(Q).with(F));
        assert_eq!(g.pass(Some(Q), false), None, "no picture starts here");
        assert_eq!(g.pass(Some(Q), true), Some((0, Some(Q))));
        assert_eq!(g.pass(Some(H), true), None, "not asked for");
        assert_eq!(g.pass(Some(F), true), Some((0, Some(F))));
        assert_eq!(g.pass(Some(F), false), Some((0, Some(F))));
        assert_eq!(g.current(), Some(Some(F)), "the largest it carries");
        assert_eq!(g.carrying(), [Some(Q), Some(F)]);
        // f stops: q goes on in its stretch; f, asked for again, waits for its keyframe
        // and comes as a new stretch.
        assert_eq!(g.set_passing(Layers::NONE.with(Q)), Layers::NONE);
        assert_eq!(g.pass(Some(F), true), None);
        assert_eq!(g.pass(Some(Q), false), Some((0, Some(Q))));
        assert_eq!(
            g.set_passing(Layers::NONE.with(Q).with(F)),
            Layers::NONE.with(F)
        );
        assert_eq!(g.pass(Some(F), false), None);
        assert_eq!(g.pass(Some(F), true), Some((1, Some(F))));
        assert_eq!(g.needs(), Layers::NONE.with(Q).with(F));
        // Its layers come from its node only: a tile's want changes nothing.
        assert_eq!(g.set(Want::Off), None);
        assert_eq!(g.pass(Some(Q), false), Some((0, Some(Q))));
        assert_eq!(
            g.pass(None, true),
            None,
            "a picture without layers is not its"
        );
    }

    #[test]
    fn a_stream_on_a_layer_that_stopped_coming_takes_the_next_keyframe_of_another() {
        let t0 = Instant::now();
        let v1 = ParticipantId(1);
        let mut v = Viewers::default();
        v.set_layers(Layers::ALL);
        v.add(v1, Want::Layer(F), false);
        let mut out = Vec::new();
        v.route(true, Some(F), true, &mut out);
        assert_eq!(out.len(), 1);
        v.overdue(t0);
        // Only h comes now: for two rounds f still counts as coming...
        for round in 1..=2 {
            for _ in 0..STOPPED_AFTER_OTHERS {
                v.route(true, Some(H), true, &mut out);
                assert!(out.is_empty(), "h is farther from f than f");
            }
            v.overdue(t0 + Duration::from_secs(round));
        }
        // f is not asked for again while it does not come (each ask would restart every
        // layer of the publisher's encoder); h, which comes, is.
        for _ in 0..STOPPED_AFTER_OTHERS {
            v.route(true, Some(H), false, &mut out);
        }
        assert_eq!(v.overdue(t0 + Duration::from_secs(3)), [H]);
        // ...then h's next keyframe starts it, in the same stretch.
        v.route(true, Some(H), false, &mut out);
        assert!(out.is_empty(), "only at a keyframe");
        v.route(true, Some(H), true, &mut out);
        assert_eq!(out.first().map(|r| (r.viewer, r.stretch)), Some((v1, 0)));
        assert_eq!(v.current(v1), Some(Some(H)));
    }

    #[test]
    fn a_track_without_layers_is_on_or_off() {
        let mut g = Gate::new(Want::Layer(F));
        assert!(!g.admit(None, false), "a first picture needs its keyframe");
        assert!(g.admit(None, true));
        assert_eq!(g.set(Want::Layer(Q)), None, "any size: it stays on");
        assert!(g.admit(None, false));
        g.set(Want::Off);
        assert!(!g.admit(None, true));
    }

    #[test]
    fn a_subscription_being_negotiated_keeps_every_layer_on_and_resumes_paused_ones() {
        let t0 = Instant::now();
        let (a, b) = (ParticipantId(1), ParticipantId(2));
        let mut v = Viewers::default();
        v.set_layers(Layers::ALL);
        // Nobody watches: after PAUSE_AFTER every layer is paused.
        assert_eq!(v.layers_to_send(t0), None);
        assert_eq!(v.layers_to_send(t0 + PAUSE_AFTER), Some(Layers::NONE));
        // Someone subscribes: every layer resumes at once, before its page answered.
        v.expect(a, t0 + PAUSE_AFTER);
        let t1 = t0 + PAUSE_AFTER + Duration::from_millis(10);
        assert_eq!(v.layers_to_send(t1), Some(Layers::ALL));
        // It stays so however long the negotiation takes.
        assert_eq!(v.layers_to_send(t1 + PAUSE_AFTER * 2), None);
        // Ready and watching a small tile: q is kept, the others pause after PAUSE_AFTER.
        v.add(a, Want::Layer(Q), false);
        v.route(true, Some(Q), true, &mut Vec::new());
        let t2 = t1 + PAUSE_AFTER * 2;
        assert_eq!(v.layers_to_send(t2), None);
        assert_eq!(
            v.layers_to_send(t2 + PAUSE_AFTER),
            Some(Layers::NONE.with(Q))
        );
        // A page that never answers holds nothing past NEGOTIATION_HOLD.
        let mut w = Viewers::default();
        w.set_layers(Layers::ALL);
        w.expect(b, t0);
        assert_eq!(w.layers_to_send(t0 + NEGOTIATION_HOLD), None);
        assert_eq!(
            w.layers_to_send(t0 + NEGOTIATION_HOLD + PAUSE_AFTER),
            Some(Layers::NONE)
        );
        // A subscriber that goes away before its stream was ready holds nothing.
        v.expect(b, t2 + PAUSE_AFTER);
        let t3 = t2 + PAUSE_AFTER + Duration::from_millis(10);
        assert_eq!(v.layers_to_send(t3), Some(Layers::ALL));
        v.remove(b);
        assert_eq!(v.layers_to_send(t3), None, "not before PAUSE_AFTER");
        assert_eq!(
            v.layers_to_send(t3 + PAUSE_AFTER),
            Some(Layers::NONE.with(Q))
        );
    }
}
