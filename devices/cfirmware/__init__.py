"""A reference TLS client firmware in C (Mbed TLS or wolfSSL) for the simulated bench.

See devices/cfirmware/README.md; ``build.build(stack, variant)`` compiles it,
``python -m devices.cfirmware bench ...`` runs the bench with it.
"""
