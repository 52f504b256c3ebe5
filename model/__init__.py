"""Training, evaluation and the shared facts of the project: the feature schema, the artifact format, storage.

Importing ``model`` is cheap: the heavy libraries (scikit-learn, MLflow) are imported by the modules that need
them, so the transformer image can use :mod:`model.schema` without installing them.
"""
