"""Predict the digit in handwritten images; see `python pipelines/predict.py --help`.

Also installed as the console script `mnist-predict`.
"""

from mnist_np.serving.predict import main

if __name__ == "__main__":
    main()
