//! The switch process (`kattach switch`): guest NICs as vhost-user virtio-net backends, the
//! uplink, and the event loop that carries out `kaos_net::switch`'s decisions.
