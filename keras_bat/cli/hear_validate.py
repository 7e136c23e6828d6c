"""`keras-bat hear-validate`: hearvalidator's checks on `keras_bat.hear`, in this process, where Keras
(and under torch, Triton) is imported before TensorFlow."""

from keras_bat.cli.common import HelpFormatter


def add_parser(commands):
    hear = commands.add_parser("hear-validate", help="run hearvalidator on keras_bat.hear (safe import order)",
                               formatter_class=HelpFormatter)
    hear.add_argument("-m", "--model", default="", help="model_file_path for keras_bat.hear.load_model")
    hear.add_argument("-d", "--device", default=None, help="device for the validator, e.g. cpu or cuda")


def run(args):
    import keras

    import keras_bat.hear  # noqa: F401  (Keras first)

    if keras.backend.backend() not in ("torch", "tensorflow"):
        raise SystemExit("hearvalidator checks torch and TensorFlow models: run hear-validate with KERAS_BACKEND=torch "
                         "or tensorflow (under JAX, keras_bat.hear's functions return JAX arrays).")
    try:
        from hearvalidator.validate import ValidateModel
    except ImportError as error:
        raise SystemExit("hear-validate needs hearvalidator: pip install 'keras-bat[hear]'") from error
    ValidateModel("keras_bat.hear", args.model, device=args.device)()
    print("hearvalidator: keras_bat.hear looks good")
    return 0
